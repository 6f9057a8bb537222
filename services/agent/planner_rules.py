"""The offline planner: plans, without a language model, the tasks the
built-in tools cover, and says plainly when a task needs a model.

A task is cut into clauses ("look up X and compute the growth rate"); each
becomes one step:
- arithmetic in the clause ("(4.2 - 3.75) / 3.75", "15% of 200") -> calculator
  (the longest run of the clause the calculator can parse; only the tool computes it);
- a computation over what earlier steps found ("compute the growth rate",
  "the difference", "the total") -> calculator, its expression made at run
  time from the first two figures the earlier steps observed;
- a question or lookup ("what was ...", "find ... in our reports") ->
  knowledge_base with the clause as query;
- anything else: the task needs a model (NeedsModel).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

from services.agent.domain import PlanStep, TraceStep
from services.agent.tools import ToolError
from services.agent.tools import calculator

# Clauses: "and" only before a verb, so "revenue and costs" stays one lookup.
_CLAUSES = re.compile(r"[;.?!]\s+|\s*\bthen\b\s*|\s+and\s+(?=(?:then\s+)?(?:compute|calculate|work out|find|look|"
                      r"search|compare|add|subtract|multiply|divide|tell|give|get|what|how|check)\b)", re.I)
_ARITHMETIC_RUN = re.compile(r"(?:\d[\d.,]*|[()+\-*/^×÷%]|\bof\b|\b(?:sqrt|ln|log|exp|abs|round|floor|ceil|"
                             r"min|max)\b|\s+)+", re.I)
_OPERATOR = re.compile(r"[+\-*/^×÷%]|\b(?:sqrt|ln|log|exp|abs|round|floor|ceil|min|max)\b")
# A derived computation over the first two figures found, a then b.
DERIVATIONS = {
    "growth": (re.compile(r"\b(growth|grow|increase|percentage change|change in percent|rate of change)\b", re.I),
               "({b} - {a}) / {a} * 100"),
    "difference": (re.compile(r"\b(difference|change|gap)\b", re.I), "{b} - {a}"),
    "ratio": (re.compile(r"\bratio\b", re.I), "{b} / {a}"),
    "total": (re.compile(r"\b(sum|total|combined)\b", re.I), "{a} + {b}"),
    "average": (re.compile(r"\b(average|mean)\b", re.I), "({a} + {b}) / 2"),
}
_COMPUTE = re.compile(r"\b(compute|calculate|work out|what is the|what's the|determine)\b", re.I)
_LOOKUP = re.compile(r"\b(what|which|who|when|where|how much|how many|find|look up|search|compare|report|reports|"
                     r"document|documents|policy|handbook|figures?|according to)\b", re.I)
_LOOKUP_VERBS = re.compile(r"^\s*(please\s+)?(compare|find|look up|search( for)?|check|tell me|get)\s+", re.I)
# Figures in text: not parts of words (Q3, H2O), not years.
_FIGURE = re.compile(r"(?<![\w.])\d+(?:,\d{3})*(?:\.\d+)?(?![\w])")
_YEAR = re.compile(r"^(19|20)\d\d$")
MODEL_NEEDED = ("the offline planner handles arithmetic, lookups in the knowledge bases and computations "
                "over what they find; this task needs a language model, and none is configured "
                "(SAGEMESH_AGENT_REASONER_URL)")


class NeedsModel(Exception):
    pass


def _arithmetic(clause: str) -> str | None:
    for run in sorted(_ARITHMETIC_RUN.findall(clause), key=len, reverse=True):
        candidate = run.strip().strip(",.")
        if any(c.isdigit() for c in candidate) and _OPERATOR.search(candidate):
            try:
                # Parsed, not computed: the planner runs on the event loop, and computing is the
                # calculator's, in its sandbox, when the step runs.
                calculator.parse(candidate)
            except ToolError:
                continue
            return candidate
    return None


def _derivation(clause: str) -> str | None:
    if not _COMPUTE.search(clause):
        return None
    return next((name for name, (pattern, _) in DERIVATIONS.items() if pattern.search(clause)), None)


def plan(task: str, tools: Sequence[str]) -> list[PlanStep]:
    steps: list[PlanStep] = []
    for clause in (c.strip() for c in _CLAUSES.split(task) if c and c.strip()):
        expression = _arithmetic(clause)
        derived = None if expression else _derivation(clause)
        if expression and "calculator" in tools:
            steps.append(PlanStep(len(steps) + 1, f"compute {expression}", "calculator", {"expression": expression}))
        elif derived and steps and "calculator" in tools:
            steps.append(PlanStep(len(steps) + 1, f"compute the {derived} of the figures found", "calculator",
                                  derive=derived))
        elif _LOOKUP.search(clause) and "knowledge_base" in tools:
            query = _LOOKUP_VERBS.sub("", clause).strip()
            steps.append(PlanStep(len(steps) + 1, f"look up: {query}", "knowledge_base", {"query": query}))
        else:
            raise NeedsModel(f"{MODEL_NEEDED}; cannot plan: {clause!r}")
    if not steps:
        raise NeedsModel(MODEL_NEEDED)
    return steps


def figures(trace: Sequence[TraceStep]) -> list[str]:
    """Figures the earlier actions observed, in order: numbers in retrieved
    passages and results of computations."""
    found: list[str] = []
    for step in trace:
        if not step.observation:
            continue
        observed = json.loads(step.observation)
        texts = [r["content"] for r in observed.get("results", [])[:1]] if "results" in observed else []
        if "result" in observed:
            texts.append(str(observed["result"]))
        for text in texts:
            found += [f.replace(",", "") for f in _FIGURE.findall(text) if not _YEAR.match(f)]
    return found


def derived_expression(step: PlanStep, trace: Sequence[TraceStep]) -> str:
    numbers = figures(trace)
    if len(numbers) < 2:
        raise ToolError(f"the {step.derive} needs two figures, and the earlier steps found "
                        f"{len(numbers) or 'no'} {'figure' if len(numbers) == 1 else 'figures'}")
    return DERIVATIONS[step.derive][1].format(a=numbers[0], b=numbers[1])


def final_answer(task: str, trace: Sequence[TraceStep]) -> str:
    """The last successful action's result, said plainly."""
    for step in reversed(trace):
        if not step.observation:
            continue
        observed = json.loads(step.observation)
        if step.action == "calculator":
            return f"{observed['expression']} = {observed['result']:g}" \
                if isinstance(observed["result"], float) else f"{observed['expression']} = {observed['result']}"
        if step.action == "knowledge_base":
            if not observed["results"]:
                return "The knowledge bases hold nothing about this."
            top = observed["results"][0]
            where = f" ({top['title']}{', page ' + str(top['page']) if top.get('page') else ''})"
            return f"{top['content']}{where}"
        return step.observation
    return "No step produced a result."
