"""agent "task": the plan, each step and tool call as they happen, then the result."""

from __future__ import annotations

import json

import click

from sagemesh_cli import knowledge_bases
from sagemesh_cli.commands.ask import kb_option
from sagemesh_cli.context import Session, json_option, run
from sagemesh_cli.errors import CliError

OBSERVATION_CHARS = 300
MODES = {"auto": "AGENT_MODE_UNSPECIFIED", "plan": "AGENT_MODE_PLAN_EXECUTE", "react": "AGENT_MODE_REACT"}


@click.command()
@click.argument("task")
@kb_option
@click.option("--tool", "tools", multiple=True, help="A tool the agent may use; repeat for several (default: all).")
@click.option("--mode", type=click.Choice(list(MODES)), default="auto", show_default=True,
              help="plan: plan, then execute; react: think, act, observe (needs a reasoning model); "
                   "auto: the service's choice.")
@click.option("--max-steps", default=0, type=click.IntRange(min=0),
              help="Most steps the run may take (default: the service's).")
@json_option
def agent(task: str, kb: tuple[str, ...], tools: tuple[str, ...], mode: str, max_steps: int,
          json_mode: bool) -> None:
    """Run a multi-step task with the agent: the plan, steps and tool calls as they happen.

    Exit code 1 when the run does not complete.
    """

    async def work(session: Session) -> None:
        kb_ids = [base["id"] for base in await knowledge_bases.resolve(session.transport, list(kb))]
        run_: dict = {}
        plans = 0
        async for event in session.transport.stream_execute(task, kb_ids, list(tools), MODES[mode], max_steps):
            if session.out.json_mode:
                session.out.data(event)
            elif "plan" in event:
                _show_plan(session, event["plan"].get("plan", []), revised=plans > 0)
                plans += 1
            elif "step" in event:
                _show_step(session, event["step"])
            run_ = event.get("completed") or run_
        if not session.out.json_mode and run_:
            _show_result(session, run_)
        if run_.get("status") != "RUN_STATUS_COMPLETED":
            status = run_.get("status", "RUN_STATUS_UNSPECIFIED").removeprefix("RUN_STATUS_").lower()
            raise CliError(f"the run {status}: {run_.get('statusReason') or 'no reason given'}")

    run(json_mode, work)


def _show_plan(session: Session, plan: list[dict], revised: bool) -> None:
    session.out.say("Plan (revised):" if revised else "Plan:", style="bold")
    for step in plan:
        session.out.say(f"  {step.get('step', '?')}. {step.get('description', '')}"
                        + (f"  [{step['tool']}]" if step.get("tool") else ""))


def _show_step(session: Session, step: dict) -> None:
    kind = step.get("stepType", "")
    out = session.out
    if kind == "STEP_TYPE_THOUGHT":
        out.say(f"  thought: {step.get('thought', '')}", style="dim")
    elif kind == "STEP_TYPE_REFLECTION":
        out.say(f"  reflection: {step.get('thought', '')}", style="dim")
    elif kind == "STEP_TYPE_ACTION":
        arguments = json.dumps(step.get("actionInput") or {}, ensure_ascii=False)
        out.say(f"  → {step.get('action', '')} {arguments}  ({step.get('latencyMs', 0):.0f} ms)", style="cyan")
        if step.get("error"):
            out.say(f"    ✗ {step['error']}", style="red")
        else:
            observation = " ".join(step.get("observation", "").split())
            if len(observation) > OBSERVATION_CHARS:
                observation = observation[:OBSERVATION_CHARS - 1] + "…"
            out.say(f"    ← {observation}")
    # PLAN steps repeat the plan shown already; FINAL_ANSWER the result shown at the end.


def _show_result(session: Session, run_: dict) -> None:
    """The answer and what it took; a run that did not complete says why in its error line."""
    if run_.get("finalResult"):
        session.out.say(f"Answer: {run_['finalResult']}", style="bold green")
    if run_.get("status") == "RUN_STATUS_COMPLETED":
        stats = run_.get("stats") or {}
        session.out.say(f"{run_.get('statusReason', '')} ({stats.get('steps', 0)} steps, "
                        f"{stats.get('toolCalls', 0)} tool calls, {stats.get('durationMs', 0):.0f} ms)",
                        style="dim")
