"""calculator: arithmetic, functions and percentages, evaluated by walking
the expression's syntax tree over an allow-list (numbers, operators, named
functions and constants). Nothing is ever passed to eval: names, attributes,
calls of anything not listed are refused.

Every step is bounded before it runs, because Python's big integers make
arithmetic whose cost grows faster than its text (`round(1, -10**9)` or
`(10**999)**1000` take seconds to hours): the syntax tree's depth, exponents,
round()'s digits, the digits of any number a step would make, and the
answer's. The tool runs sandboxed (see Tool.compute): what the bounds do not
foresee costs a worker process its CPU-time limit, never the service."""

from __future__ import annotations

import ast
import math
import operator
import re
from functools import partial
from typing import Any

from services.agent.tools import Tool, ToolError

MAX_EXPRESSION_CHARS = 500
# Nesting of parentheses, calls and signs: 32 levels is beyond any sum a person writes, and keeps
# the walk over the tree far from Python's recursion limit.
MAX_DEPTH = 32
MAX_EXPONENT = 1000
# round() to at most this many digits either side of the point: a float holds 17 significant digits,
# so more rounds nothing, while each digit asked of an int costs a power of ten to compute.
MAX_ROUND_DIGITS = 20
# Digits of the largest whole number any step may make. At 1000 every step takes microseconds
# ((10**999)**1000, a million digits, alone takes 0.15 s) and exact arithmetic such as (2**1000) % 7
# still works. The agent's setting SAGEMESH_AGENT_CALCULATOR_MAX_DIGITS takes its default from here.
MAX_WORKING_DIGITS = 1000
# Digits of the answer: a number longer than a line is nobody's answer, and it stays far below
# Python's 4300-digit limit on writing an int as text.
MAX_RESULT_DIGITS = 300
_LARGEST_RESULT = 10**MAX_RESULT_DIGITS

_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_FUNCTIONS = {
    "sqrt": math.sqrt, "log": math.log, "ln": math.log, "log10": math.log10, "log2": math.log2, "exp": math.exp,
    "sin": math.sin, "cos": math.cos, "tan": math.tan, "abs": abs, "round": round, "floor": math.floor,
    "ceil": math.ceil, "min": min, "max": max,
}
_CONSTANTS = {"pi": math.pi, "e": math.e}
# "15% of 200" -> "(15/100)*200"; "200 * 15%" -> "200 * (15/100)".
_PERCENT_OF = re.compile(r"(\d+(?:\.\d+)?)\s*%\s*of\b", re.IGNORECASE)
_PERCENT = re.compile(r"(\d+(?:\.\d+)?)\s*%")
# "1,250,000": a comma between a digit and three more is a thousands separator
# (write function arguments with a space after the comma: max(1, 700)).
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")


def _rewritten(expression: str) -> str:
    text = _THOUSANDS.sub("", expression.replace("×", "*").replace("÷", "/").replace("^", "**"))
    text = _PERCENT_OF.sub(r"(\1/100)*", text)
    return _PERCENT.sub(r"(\1/100)", text)


def _not_arithmetic(node: ast.AST) -> ToolError:
    return ToolError(f"{ast.unparse(node)!r} is not arithmetic this calculator knows; it knows numbers, "
                     f"+ - * / // % ** ^, percentages, {', '.join(_FUNCTIONS)} and {', '.join(_CONSTANTS)}")


def _check_tree(tree: ast.Expression) -> None:
    """Refuses any node outside the allow-list and any nesting deeper than MAX_DEPTH, walking
    without recursion so that the tree's depth cannot exhaust the stack here."""
    pending: list[tuple[ast.AST, int]] = [(tree.body, 1)]
    while pending:
        node, depth = pending.pop()
        if depth > MAX_DEPTH:
            raise ToolError(f"expressions are limited to {MAX_DEPTH} levels of nesting")
        if isinstance(node, ast.Constant):
            if isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
                raise ToolError("only real numbers can be computed")
        elif isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            pending += [(node.left, depth + 1), (node.right, depth + 1)]
        elif isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
            pending.append((node.operand, depth + 1))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCTIONS \
                and not node.keywords:
            pending += [(argument, depth + 1) for argument in node.args]
        elif not (isinstance(node, ast.Name) and node.id in _CONSTANTS):
            raise _not_arithmetic(node)


def parse(expression: str) -> ast.Expression:
    """The expression's syntax tree, checked against the allow-list and the nesting limit; cheap
    (it computes nothing), so the planner may call it on the event loop."""
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise ToolError(f"expressions are limited to {MAX_EXPRESSION_CHARS} characters")
    try:
        tree = ast.parse(_rewritten(expression), mode="eval")
    except (SyntaxError, ValueError):  # ValueError: a NUL byte
        raise ToolError(f"{expression!r} is not an arithmetic expression") from None
    except (RecursionError, MemoryError):  # the parser's own stack, on deep nesting
        raise ToolError(f"expressions are limited to {MAX_DEPTH} levels of nesting") from None
    _check_tree(tree)
    return tree


class _Evaluation:
    def __init__(self, max_digits: int) -> None:
        self.max_digits = max_digits
        self.max_bits = math.ceil(max_digits * math.log2(10))

    def too_large(self) -> ToolError:
        return ToolError(f"the result is too large: numbers are limited to {self.max_digits} digits")

    def number(self, value: Any) -> float | int:
        if isinstance(value, complex):
            raise ToolError("the result is not a real number")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ToolError("only real numbers can be computed")
        if isinstance(value, int) and value.bit_length() > self.max_bits:
            raise self.too_large()
        if isinstance(value, float) and not math.isfinite(value):
            raise self.too_large() if math.isinf(value) else ToolError("the result is not a number")
        return value

    def check_power(self, base: float | int, exponent: float | int) -> None:
        if abs(exponent) > MAX_EXPONENT:
            raise ToolError(f"exponents above {MAX_EXPONENT} are refused")
        # The digits the power would have, known from logarithms before it is computed.
        if abs(base) > 1 and exponent > 0 and exponent * math.log10(abs(base)) > self.max_digits:
            raise self.too_large()

    def check_product(self, left: float | int, right: float | int) -> None:
        if isinstance(left, int) and isinstance(right, int) and \
                left.bit_length() + right.bit_length() > self.max_bits + 1:
            raise self.too_large()

    def check_call(self, name: str, arguments: list[float | int]) -> None:
        if name == "round" and len(arguments) == 2:
            digits = arguments[1]
            if not isinstance(digits, int):
                raise ToolError("round(): the digits must be a whole number")
            if abs(digits) > MAX_ROUND_DIGITS:
                raise ToolError(f"round(): the digits must be between {-MAX_ROUND_DIGITS} and {MAX_ROUND_DIGITS}")

    def evaluate(self, node: ast.AST) -> float | int:
        # The tree passed _check_tree: every node here is one of these.
        if isinstance(node, ast.Constant):
            return self.number(node.value)
        if isinstance(node, ast.Name):
            return _CONSTANTS[node.id]
        if isinstance(node, ast.UnaryOp):
            return _UNARY[type(node.op)](self.evaluate(node.operand))
        if isinstance(node, ast.BinOp):
            left, right = self.evaluate(node.left), self.evaluate(node.right)
            if isinstance(node.op, ast.Pow):
                self.check_power(left, right)
            elif isinstance(node.op, ast.Mult):
                self.check_product(left, right)
            return self.number(self._computed(_BINARY[type(node.op)], left, right))
        call: ast.Call = node  # type: ignore[assignment]
        name = call.func.id  # type: ignore[attr-defined]
        arguments = [self.evaluate(argument) for argument in call.args]
        self.check_call(name, arguments)
        return self.number(self._computed(_FUNCTIONS[name], *arguments, name=name))

    def _computed(self, function, *arguments: float | int, name: str = "") -> Any:
        try:
            return function(*arguments)
        except ZeroDivisionError:
            raise ToolError("division by zero") from None
        except OverflowError:
            raise self.too_large() from None
        except (ValueError, TypeError) as error:
            raise ToolError(f"{name}(): {error}" if name else str(error)) from None


def calculate(expression: str, max_digits: int = MAX_WORKING_DIGITS) -> float | int:
    """The expression's value; every step bounded (see the module's doc). CPU-bound: run it in a
    sandbox, as the registry does, not on an event loop."""
    result = _Evaluation(max_digits).evaluate(parse(expression).body)
    if abs(result) >= _LARGEST_RESULT:
        raise ToolError(f"the result is too large: answers are limited to {MAX_RESULT_DIGITS} digits")
    if isinstance(result, float):
        # Binary floating point leaves noise a person would not write: 12.000000000000005.
        result = float(f"{result:.12g}")
        return int(result) if result.is_integer() and abs(result) < 2**53 else result
    return result


def compute(arguments: dict[str, Any], max_digits: int) -> dict[str, Any]:
    return {"expression": arguments["expression"], "result": calculate(arguments["expression"], max_digits)}


def calculator_tool(max_digits: int = MAX_WORKING_DIGITS) -> Tool:
    return Tool(
        name="calculator",
        description="Evaluates arithmetic: + - * / // % ** (or ^), parentheses, percentages ('15% of 200', "
                    "'80 * 1.5%'), functions sqrt log ln log10 log2 exp sin cos tan abs round floor ceil min max, "
                    "and the constants pi and e.",
        input_schema={
            "type": "object",
            "properties": {"expression": {"type": "string", "minLength": 1, "maxLength": MAX_EXPRESSION_CHARS,
                                          "description": "e.g. (4.2 - 3.75) / 3.75 * 100"}},
            "required": ["expression"],
            "additionalProperties": False,
        },
        compute=partial(compute, max_digits=max_digits),
        timeout_seconds=2.0,
    )
