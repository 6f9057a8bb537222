"""calculator: arithmetic, functions and percentages, evaluated by walking
the expression's syntax tree over an allow-list (numbers, operators, named
functions and constants). Nothing is ever passed to eval: names, attributes,
calls of anything not listed, and huge powers are refused."""

from __future__ import annotations

import ast
import math
import operator
import re
from typing import Any

from services.agent.tools import Tool, ToolContext, ToolError

MAX_EXPRESSION_CHARS = 500
MAX_EXPONENT = 1000
MAX_MAGNITUDE = 1e300

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


def _number(value: Any) -> float | int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ToolError("only numbers can be computed")
    if abs(value) > MAX_MAGNITUDE:
        raise ToolError("the result is too large")
    return value


def _evaluate(node: ast.AST) -> float | int:
    if isinstance(node, ast.Expression):
        return _evaluate(node.body)
    if isinstance(node, ast.Constant):
        return _number(node.value)
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _evaluate(node.left), _evaluate(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > MAX_EXPONENT:
            raise ToolError(f"exponents above {MAX_EXPONENT} are refused")
        try:
            return _number(_BINARY[type(node.op)](left, right))
        except ZeroDivisionError:
            raise ToolError("division by zero") from None
        except OverflowError:
            raise ToolError("the result is too large") from None
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_evaluate(node.operand))
    if isinstance(node, ast.Name) and node.id in _CONSTANTS:
        return _CONSTANTS[node.id]
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCTIONS
            and not node.keywords):
        try:
            return _number(_FUNCTIONS[node.func.id](*(_evaluate(arg) for arg in node.args)))
        except (ValueError, TypeError) as error:
            raise ToolError(f"{node.func.id}(): {error}") from None
    raise ToolError(f"{ast.unparse(node)!r} is not arithmetic this calculator knows; it knows numbers, "
                    f"+ - * / // % ** ^, percentages, {', '.join(_FUNCTIONS)} and {', '.join(_CONSTANTS)}")


def calculate(expression: str) -> float | int:
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise ToolError(f"expressions are limited to {MAX_EXPRESSION_CHARS} characters")
    try:
        tree = ast.parse(_rewritten(expression), mode="eval")
    except SyntaxError:
        raise ToolError(f"{expression!r} is not an arithmetic expression") from None
    result = _evaluate(tree)
    if isinstance(result, float):
        # Binary floating point leaves noise a person would not write: 12.000000000000005.
        result = float(f"{result:.12g}")
        return int(result) if result.is_integer() and abs(result) < 2**53 else result
    return result


async def _run(arguments: dict[str, Any], context: ToolContext) -> dict[str, Any]:
    return {"expression": arguments["expression"], "result": calculate(arguments["expression"])}


TOOL = Tool(
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
    run=_run,
    timeout_seconds=2.0,
)
