"""Faults under the full load mix: `python -m bench.faults --users 16` (about 2.5 minutes).

The mesh runs as separate processes (scripts/mesh_process.ProcessMesh), its
services' database a PostgreSQL cluster made for the run and dropped after it
(scripts/postgres_cluster), so the machine's own cluster is never stopped.
The users loop over bench/load.py's mix through the gateway while, in turn:

  rag_engine  the rag_engine is killed -9, kept down, then started again;
  knowledge   the knowledge service the same, uploads in flight;
  postgres    PostgreSQL is stopped under the services, kept down, then started again.

Writes are sent as a careful client sends them: a refused one (409, 429, 5xx,
no answer) is sent again, the same request, until accepted or RETRY_FOR_SECONDS
pass. A message carries an Idempotency-Key for that; an upload needs none (the
same content in a base is the same document). Reads are sent once: the next
read is the retry.

Per scenario it reports the requests by status before, during and after the
fault, how fast failures were answered while it lasted, how long after the
restart requests succeeded again, and what the database holds once things
settle, read directly: every accepted message stored once with one answer, no
refused send's question left behind, every accepted upload stored once, and
every document at a final status within SETTLE_BOUND_SECONDS.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import partial
from pathlib import Path

import httpx
from sqlalchemy import exists, func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import aliased

from bench import machine
from bench.load import MIX, Results, User, drive, load_client, load_env, percentile, send_once, set_up
from meshkit.db import create_engine
from scripts.mesh_process import ProcessMesh, start_mesh
from scripts.postgres_cluster import PrivateCluster, private_cluster
from services.conversation.domain import Role
from services.conversation.tables import MessageRow
from services.knowledge.domain import DocumentStatus
from services.knowledge.tables import DocumentRow

MESSAGE_ROUTES = ("POST messages (cached question)", "POST messages (new question)")
UPLOAD_ROUTE = "POST documents (upload)"
# Sent again: 409 while the first try of the same key is still being answered, 429 a rate
# limit, 5xx while a backend is away; and no answer at all.
RETRYABLE = {409, 429, 502, 503, 504}
RETRY_PAUSE_SECONDS = 0.5
RETRY_FOR_SECONDS = 60.0
# After the traffic stops: how long every document may take to reach a final status, and
# every question its answer (or be removed).
SETTLE_BOUND_SECONDS = 60.0
FINAL_STATUSES = [status.value for status in DocumentStatus if status.finished]
PHASES = ("before", "during", "after")
FAULT_NAMES = ("rag_engine", "knowledge", "postgres")  # all_faults() makes them, in this order


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# What the users did ----------------------------------------------------------


@dataclass(frozen=True)
class Attempt:
    """One request sent, as the gateway answered it."""

    route: str
    answered_at: float  # time.perf_counter()
    seconds: float
    status: int | None  # None: no answer (the connection failed)

    @property
    def succeeded(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def failed(self) -> bool:
        # A 429 is the rate limits at work, not the fault.
        return not self.succeeded and self.status != 429


@dataclass
class Write:
    """One write as its user meant it, however many times it was sent."""

    route: str
    request: httpx.Request
    tries: int = 0
    response: httpx.Response | None = None  # the last one

    @property
    def accepted(self) -> bool:
        return self.response is not None and self.response.is_success

    def sent_message(self) -> tuple[str, str]:
        """The conversation and the question of a message write."""
        return self.request.url.path.split("/")[4], json.loads(self.request.content)["content"]


@dataclass
class FaultResults(Results):
    """bench/load.py's results, with every attempt and every write kept."""

    attempts: list[Attempt] = field(default_factory=list)
    writes: list[Write] = field(default_factory=list)

    def record(self, route: str, started: float, response: httpx.Response | None, problem: str = "") -> None:
        now = time.perf_counter()
        status = response.status_code if response is not None else None
        self.attempts.append(Attempt(route, now, now - started, status))
        super().record(route, started, response, problem)


def retryable(response: httpx.Response | None) -> bool:
    return response is None or response.status_code in RETRYABLE


async def send_as_careful_client(user: User, route: str, request: httpx.Request, results: FaultResults) -> None:
    """bench/load.py's Sender: reads once, writes again and again until accepted (see the top)."""
    if route not in (*MESSAGE_ROUTES, UPLOAD_ROUTE):
        await send_once(user, route, request, results)
        return
    if route in MESSAGE_ROUTES:
        request.headers["Idempotency-Key"] = str(uuid.uuid4())
    write = Write(route, request)
    results.writes.append(write)
    give_up_at = time.perf_counter() + RETRY_FOR_SECONDS
    while True:
        write.response = await send_once(user, route, request, results)
        write.tries += 1
        if not retryable(write.response) or time.perf_counter() > give_up_at:
            return
        await asyncio.sleep(RETRY_PAUSE_SECONDS)


# The faults ------------------------------------------------------------------


@dataclass(frozen=True)
class Fault:
    name: str  # as --only names it
    title: str
    inflict: Callable[[], None]
    repair: Callable[[], None]  # returns once the broken part serves again


def restart_service(mesh: ProcessMesh, name: str) -> None:
    mesh.start(name)
    mesh.wait_serving(name)


def all_faults(mesh: ProcessMesh, cluster: PrivateCluster) -> list[Fault]:
    return [
        Fault("rag_engine", "rag_engine killed -9", partial(mesh.kill, "rag_engine"),
              partial(restart_service, mesh, "rag_engine")),
        Fault("knowledge", "knowledge killed -9", partial(mesh.kill, "knowledge"),
              partial(restart_service, mesh, "knowledge")),
        Fault("postgres", "PostgreSQL stopped (fast)", cluster.stop, cluster.start),
    ]


@dataclass(frozen=True)
class Durations:
    warm_up: float
    down: float
    recover: float  # traffic after the restart begins


@dataclass
class Timeline:
    """When things happened in a scenario, as time.perf_counter() tells."""

    started: float
    broken: float = math.inf
    restarted: float = math.inf  # the restart begun
    serving: float = math.inf  # the restart done
    stopped: float = math.inf  # the traffic: every user's last request answered

    def phase(self, at: float) -> str:
        return "before" if at < self.broken else "during" if at < self.serving else "after"

    def seconds(self, phase: str) -> float:
        bounds = {"before": (self.started, self.broken), "during": (self.broken, self.serving),
                  "after": (self.serving, self.stopped)}[phase]
        return max(bounds[1] - bounds[0], 0.0)


async def inflict_and_repair(fault: Fault, timeline: Timeline, durations: Durations) -> None:
    await asyncio.sleep(durations.warm_up)
    progress(f"{fault.name}: {fault.title}")
    timeline.broken = time.perf_counter()
    await asyncio.to_thread(fault.inflict)
    await asyncio.sleep(durations.down)
    timeline.restarted = time.perf_counter()
    await asyncio.to_thread(fault.repair)
    timeline.serving = time.perf_counter()
    progress(f"{fault.name}: serving again {timeline.serving - timeline.restarted:.1f} s after the restart")


# What the database holds -----------------------------------------------------


@dataclass
class Settled:
    """Seconds after the traffic stopped; None: not within SETTLE_BOUND_SECONDS."""

    queue_drained: float | None = None
    questions_answered: float | None = None


async def unfinished_documents(engine: AsyncEngine) -> int:
    async with engine.connect() as db:
        return await db.scalar(select(func.count()).select_from(DocumentRow)
                               .where(DocumentRow.status.not_in(FINAL_STATUSES)))


async def unanswered_questions(engine: AsyncEngine, since: datetime) -> int:
    answer = aliased(MessageRow)
    async with engine.connect() as db:
        return await db.scalar(select(func.count()).select_from(MessageRow).where(
            MessageRow.role == Role.USER.value, MessageRow.created_at >= since,
            ~exists().where(answer.parent_id == MessageRow.id, answer.role == Role.ASSISTANT.value)))


async def settle(engine: AsyncEngine, since: datetime) -> Settled:
    """Waits until every document is final and every question since `since` is answered (an
    unanswered one is removed by the conversation service: chats.py, _give_up)."""
    settled, started = Settled(), time.perf_counter()
    while time.perf_counter() - started < SETTLE_BOUND_SECONDS:
        elapsed = time.perf_counter() - started
        if settled.queue_drained is None and not await unfinished_documents(engine):
            settled.queue_drained = elapsed
        if settled.questions_answered is None and not await unanswered_questions(engine, since):
            settled.questions_answered = elapsed
        if settled.queue_drained is not None and settled.questions_answered is not None:
            break
        await asyncio.sleep(0.5)
    return settled


@dataclass
class WriteCheck:
    """The writes of one kind against what the database holds."""

    accepted: int = 0
    retried: int = 0  # accepted after one refusal or more
    stored_once: int = 0  # accepted and in the database exactly once (a question: with one answer)
    findings: Counter[str] = field(default_factory=Counter)  # what is wrong, by kind
    evidence: list[str] = field(default_factory=list)

    def find(self, kind: str, detail: str) -> None:
        self.findings[kind] += 1
        if self.findings[kind] <= 5:
            self.evidence.append(f"{kind}: {detail}")

    def count(self, write: Write) -> None:
        if write.accepted:
            self.accepted += 1
            self.retried += write.tries > 1
        else:
            # Still refused for a passing reason after RETRY_FOR_SECONDS, or refused for good.
            kind = "given up" if retryable(write.response) else "refused"
            self.find(kind, f"{write.route}, {write.tries} tries, the last: {describe(write.response)}")


def describe(response: httpx.Response | None) -> str:
    return "no answer" if response is None else f"{response.status_code} {response.text[:160]}"


async def check_messages(engine: AsyncEngine, since: datetime, writes: list[Write]) -> WriteCheck:
    async with engine.connect() as db:
        rows = (await db.execute(select(MessageRow.id, MessageRow.conversation_id, MessageRow.role,
                                        MessageRow.content, MessageRow.parent_id)
                                 .where(MessageRow.created_at >= since))).all()
    questions: dict[tuple[str, str], list[str]] = defaultdict(list)  # by conversation and content
    answers: dict[str, list[str]] = defaultdict(list)  # by question
    for row in rows:
        if row.role == Role.USER.value:
            questions[row.conversation_id, row.content].append(row.id)
        else:
            answers[row.parent_id].append(row.id)
    check = WriteCheck()
    for write in (w for w in writes if w.route in MESSAGE_ROUTES):
        check.count(write)
        stored = questions.get(write.sent_message(), [])
        if write.accepted:
            check_accepted_message(check, write, stored, answers)
        elif stored:
            check.find("kept though refused", f"{write.sent_message()} stored as {stored}")
    for ids in questions.values():
        for question in ids:
            if len(answers[question]) != 1:
                check.find("orphan question", f"{question} has {len(answers[question])} answers")
    return check


def check_accepted_message(check: WriteCheck, write: Write, stored: list[str],
                           answers: dict[str, list[str]]) -> None:
    sent = write.response.json()
    question, answer = sent["userMessage"]["id"], sent["message"]["id"]
    if question not in stored:
        check.find("missing", f"question {question} {write.sent_message()} is not stored")
    elif len(stored) > 1:
        check.find("doubled", f"{write.sent_message()} stored {len(stored)} times: {stored}")
    elif answers[question] != [answer]:
        check.find("answer not the one sent", f"question {question}: answered {answer}, stored {answers[question]}")
    else:
        check.stored_once += 1


@dataclass
class UploadCheck(WriteCheck):
    slowest_seconds: float = 0.0  # from the upload to a final status


async def check_uploads(engine: AsyncEngine, since: datetime, writes: list[Write]) -> UploadCheck:
    async with AsyncSession(engine) as db:
        rows = (await db.scalars(select(DocumentRow).where(DocumentRow.created_at >= since))).all()
        contents = Counter((kb, sha) for kb, sha in await db.execute(
            select(DocumentRow.kb_id, DocumentRow.sha256)))
    stored = {row.id: row for row in rows}
    check = UploadCheck()
    accepted: Counter[str] = Counter()
    for write in (w for w in writes if w.route == UPLOAD_ROUTE):
        check.count(write)
        if write.accepted:
            accepted[write.response.json()["documentId"]] += 1
    for document, times in accepted.items():
        row = stored.get(document)
        if row is None:
            check.find("missing", f"document {document} is not stored")
        elif times > 1 or contents[row.kb_id, row.sha256] > 1:
            check.find("doubled", f"document {document}: accepted {times} times, its content stored "
                                  f"{contents[row.kb_id, row.sha256]} times")
        else:
            check.stored_once += 1
    for row in rows:
        check_ingested(check, row, accepted)
    return check


def check_ingested(check: UploadCheck, row: DocumentRow, accepted: Counter[str]) -> None:
    if row.id not in accepted:
        check.find("kept though refused", f"document {row.id} ({row.status})")
    if row.status not in FINAL_STATUSES:
        check.find("not final", f"document {row.id} is {row.status}")
        return
    check.slowest_seconds = max(check.slowest_seconds, (row.updated_at - row.created_at).total_seconds())
    if row.status == DocumentStatus.FAILED.value:
        check.find("failed", f"document {row.id}: {row.error}")
    elif not row.chunk_count or row.chunk_count != row.vector_count:
        check.find("chunks ≠ vectors", f"document {row.id}: {row.chunk_count} chunks, {row.vector_count} vectors")


# A scenario -------------------------------------------------------------------


@dataclass
class Outcome:
    fault: Fault
    timeline: Timeline
    results: FaultResults
    settled: Settled
    messages: WriteCheck
    uploads: UploadCheck

    @property
    def clean(self) -> bool:
        return (not self.messages.findings and not self.uploads.findings
                and None not in (self.settled.queue_drained, self.settled.questions_answered))


async def run_scenario(users: list[User], fault: Fault, durations: Durations, engine: AsyncEngine) -> Outcome:
    results, since = FaultResults(), datetime.now(timezone.utc)
    timeline = Timeline(time.perf_counter())
    until = timeline.started + durations.warm_up + durations.down + durations.recover
    # A group: should the fault fail (or Ctrl-C come), the users stop too.
    async with asyncio.TaskGroup() as group:
        for user in users:
            group.create_task(drive(user, until, results, MIX, send_as_careful_client))
        await inflict_and_repair(fault, timeline, durations)
    timeline.stopped = time.perf_counter()
    progress(f"{fault.name}: traffic stopped; waiting for the queue and the answers to settle")
    settled = await settle(engine, since)
    return Outcome(fault, timeline, results, settled, await check_messages(engine, since, results.writes),
                   await check_uploads(engine, since, results.writes))


async def run_scenarios(mesh: ProcessMesh, faults: list[Fault], users: int, durations: Durations,
                        database_url: str) -> list[Outcome]:
    engine = create_engine(database_url)
    try:
        async with load_client(mesh.url, users) as client:
            everyone = await set_up(client, users)
            return [await run_scenario(everyone, fault, durations, engine) for fault in faults]
    finally:
        await engine.dispose()


# The report --------------------------------------------------------------------


def by_count(counts: Counter) -> str:
    return ", ".join(f"{key} ×{n}" for key, n in counts.most_common()) or "–"


def phase_rows(outcome: Outcome) -> list[str]:
    timeline, rows = outcome.timeline, []
    for phase in PHASES:
        attempts = [a for a in outcome.results.attempts if timeline.phase(a.answered_at) == phase]
        refused = [a for a in attempts if not a.succeeded]
        statuses = Counter(str(a.status) if a.status else "no answer" for a in refused)
        routes = Counter(a.route for a in refused)
        title = outcome.fault.title if phase == "before" else ""
        rows.append(f"| {title} | {phase} | {timeline.seconds(phase):.1f} | {len(attempts)} | "
                    f"{len(attempts) - len(refused)} | {by_count(statuses)} | {by_count(routes)} |")
    return rows


def milliseconds(values: list[float], q: int) -> str:
    return f"{percentile(values, q) * 1000:.0f}" if values else "–"


def after_restart(moment: float, timeline: Timeline) -> str:
    return f"{moment - timeline.restarted:.1f} s" if math.isfinite(moment) else "–"


def failed_during(outcome: Outcome) -> list[Attempt]:
    return [a for a in outcome.results.attempts if a.failed and outcome.timeline.phase(a.answered_at) == "during"]


def latency_cells(attempts: list[Attempt]) -> str:
    latencies = [a.seconds for a in attempts]
    return (f"{len(attempts)} | {milliseconds(latencies, 50)} | {milliseconds(latencies, 95)} | "
            f"{max(latencies, default=0) * 1000:.0f}")


def failure_rows_by_route(outcome: Outcome) -> list[str]:
    down = failed_during(outcome)
    routes = sorted({a.route for a in down})
    return [f"| {outcome.fault.title if i == 0 else ''} | {route} | "
            f"{latency_cells([a for a in down if a.route == route])} |" for i, route in enumerate(routes)]


def recovery_row(outcome: Outcome) -> str:
    attempts, timeline = outcome.results.attempts, outcome.timeline
    down = failed_during(outcome)
    affected = {a.route for a in down}
    first_success = min((a.answered_at for a in attempts if a.route in affected and a.succeeded
                         and a.answered_at >= timeline.restarted), default=math.inf)
    last_failure = max((a.answered_at for a in attempts if a.failed and a.answered_at >= timeline.restarted),
                       default=math.inf)
    writes = outcome.messages.accepted + outcome.uploads.accepted
    retried = outcome.messages.retried + outcome.uploads.retried
    return (f"| {outcome.fault.title} | {latency_cells(down)} | {after_restart(timeline.serving, timeline)} | "
            f"{after_restart(first_success, timeline)} | {after_restart(last_failure, timeline)} | "
            f"{writes} ({retried}) |")


def seconds_or_not(value: float | None) -> str:
    return f"{value:.1f} s" if value is not None else f"**not within {SETTLE_BOUND_SECONDS:.0f} s**"


def check_rows(outcome: Outcome) -> list[str]:
    messages, uploads, settled = outcome.messages, outcome.uploads, outcome.settled
    return [
        f"| {outcome.fault.title} | messages | {messages.accepted} ({messages.retried}) | {messages.stored_once} | "
        f"{by_count(messages.findings)} | answered or removed after {seconds_or_not(settled.questions_answered)} |",
        f"| | uploads | {uploads.accepted} ({uploads.retried}) | {uploads.stored_once} | "
        f"{by_count(uploads.findings)} | queue drained after {seconds_or_not(settled.queue_drained)}; "
        f"slowest upload to final {uploads.slowest_seconds:.1f} s |",
    ]


def evidence(outcomes: list[Outcome]) -> list[str]:
    lines = []
    for outcome in outcomes:
        for kind, check in (("messages", outcome.messages), ("uploads", outcome.uploads)):
            lines += [f"- {outcome.fault.name}, {kind}: {line}" for line in check.evidence]
    return ["", "Findings, the first few of each kind:", "", *lines] if lines else []


def report(outcomes: list[Outcome], header: list[str]) -> str:
    lines = [*header, "", "Requests by phase (by the time each was answered; *during* runs from the fault until "
             "the restart is done):", "",
             "| fault | phase | seconds | requests | 2xx | not 2xx, by status | not 2xx, by route |",
             "|---|---|---|---|---|---|---|"]
    for outcome in outcomes:
        lines += phase_rows(outcome)
    lines += ["", "While it lasted, and the recovery (failures exclude 429s; times after the restart begun):", "",
              "| fault | failures | p50 ms | p95 ms | max ms | serving again | first success of a failed route | "
              "last failure | writes accepted (after a retry) |",
              "|---|---|---|---|---|---|---|---|---|"]
    lines += [recovery_row(outcome) for outcome in outcomes]
    lines += ["", "The failures while it lasted, by route:", "",
              "| fault | route | failures | p50 ms | p95 ms | max ms |", "|---|---|---|---|---|---|"]
    for outcome in outcomes:
        lines += failure_rows_by_route(outcome)
    lines += ["", "What the database holds once things settle (read directly; findings are what is wrong):", "",
              "| fault | writes | accepted (after a retry) | stored exactly once | findings | settled |",
              "|---|---|---|---|---|---|"]
    for outcome in outcomes:
        lines += check_rows(outcome)
    lines += evidence(outcomes)
    return "\n".join(lines) + "\n"


def header(options: argparse.Namespace, faults: list[Fault], seconds: float, other: machine.OtherUse) -> list[str]:
    only = f" --only {' '.join(f.name for f in faults)}" if len(faults) < len(FAULT_NAMES) else ""
    return [
        "# Faults under load", "",
        f"`python -m bench.faults --users {options.users}{only}` on {machine.describe()}: {options.users} users "
        "without pause over bench/load.py's mix through the gateway, the mesh as separate processes on a "
        "PostgreSQL cluster of the bench's own.",
        f"Each fault: {options.warm_up:.0f} s of traffic, the fault for {options.down:.0f} s, then the restart and "
        f"{options.recover:.0f} s more traffic; a refused write is sent again for up to {RETRY_FOR_SECONDS:.0f} s. "
        f"The run took {seconds:.0f} s.",
        f"{other.sentence(os.cpu_count() or 1)} The figures are indicative.",
    ]


def parse_options() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=16)
    parser.add_argument("--warm-up", type=float, default=8, help="seconds of traffic before the fault")
    parser.add_argument("--down", type=float, default=10, help="seconds the broken part stays down")
    parser.add_argument("--recover", type=float, default=20, help="seconds of traffic after the restart begins")
    parser.add_argument("--only", nargs="+", choices=FAULT_NAMES, help="these faults alone")
    parser.add_argument("--out", type=Path, default=Path("bench/results/faults.md"))
    return parser.parse_args()


def main() -> None:
    options = parse_options()
    durations = Durations(options.warm_up, options.down, options.recover)
    started = time.perf_counter()
    # The services' data and logs: removed after a clean run, kept for reading otherwise.
    data_dir = Path(tempfile.mkdtemp(prefix="sagemesh-faults-"))
    try:
        with contextlib.ExitStack() as stack:
            cluster = stack.enter_context(private_cluster("sagemesh_faults"))
            mesh = start_mesh(load_env(data_dir, SAGEMESH_DATABASE_URL=cluster.url))
            stack.callback(mesh.stop)
            faults = [f for f in all_faults(mesh, cluster) if not options.only or f.name in options.only]
            # Ours: this process and its children (the mesh), and the cluster's server.
            with machine.OtherCpuWatch(lambda: (os.getpid(), cluster.postmaster_pid() or 0)) as watch:
                outcomes = asyncio.run(run_scenarios(mesh, faults, options.users, durations, cluster.url))
    except BaseException:
        progress(f"the services' logs are kept in {data_dir}")
        raise
    table = report(outcomes, header(options, faults, time.perf_counter() - started, watch.use()))
    print(table)
    options.out.write_text(table)
    if all(outcome.clean for outcome in outcomes):
        shutil.rmtree(data_dir)
    else:
        progress(f"findings: the services' logs are kept in {data_dir}")
        sys.exit(1)


if __name__ == "__main__":
    main()
