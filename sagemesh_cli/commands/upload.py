"""upload PATH... --kb NAME: files and folders, with progress, resumable (see uploads.py)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import click
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.text import Text

from sagemesh_cli import knowledge_bases
from sagemesh_cli.context import Session, json_option, run
from sagemesh_cli.errors import ExitCode
from sagemesh_cli.files import LocalFile, collect
from sagemesh_cli.output import Output
from sagemesh_cli.transports.base import BytesSent
from sagemesh_cli.uploads import Outcome, Uploader

STYLES = {"uploaded": "green", "skipped": "yellow", "failed": "red", "indexed": "green"}


@click.command()
@click.argument("paths", metavar="PATH...", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--kb", "kb", required=True, metavar="NAME|ID", help="The knowledge base to upload to.")
@click.option("--concurrency", default=4, show_default=True, type=click.IntRange(1, 32), help="Files sent at once.")
@click.option("--wait", is_flag=True, help="Wait until every document is indexed.")
@json_option
def upload(paths: tuple[Path, ...], kb: str, concurrency: int, wait: bool, json_mode: bool) -> None:
    """Upload files and folders, with progress; resumable.

    Folders are taken recursively, leaving out hidden files and types the knowledge service
    does not read. Files already in the base (the same SHA-256) are skipped, so running it
    again finishes an interrupted upload. Exit code 1 when any file failed.
    """

    async def work(session: Session) -> ExitCode:
        types = await session.transport.supported_types()
        files, left_out = collect(list(paths), frozenset(e for t in types for e in t.get("extensions", [])))
        (base,) = await knowledge_bases.resolve(session.transport, [kb])
        set_aside = [Outcome(item.shown, "skipped", item.reason) for item in left_out]
        if session.out.json_mode:
            for outcome in set_aside:
                session.out.data(outcome.as_json())
            outcomes = await Uploader(session.transport, base["id"], JsonView(session.out), concurrency,
                                      wait).run(files)
        else:
            for outcome in set_aside:
                print_outcome(session.out, outcome)
            with ProgressView(session.out, files, wait) as view:
                outcomes = await Uploader(session.transport, base["id"], view, concurrency, wait).run(files)
        counts = Counter(outcome.result for outcome in [*set_aside, *outcomes])
        summary = {result: counts[result] for result in ("uploaded", "skipped", "failed")}
        if session.out.json_mode:
            session.out.data({"summary": summary})
        else:
            session.out.say(f"{summary['uploaded']} uploaded, {summary['skipped']} skipped, "
                            f"{summary['failed']} failed (knowledge base {base['name']}).",
                            style="bold red" if summary["failed"] else "bold")
        return ExitCode.FAILED if summary["failed"] else ExitCode.OK

    run(json_mode, work)


def print_outcome(out: Output, outcome: Outcome, result: str | None = None) -> None:
    result = result or outcome.result
    out.console.print(Text.assemble((f"{result:<9}", STYLES[result]), outcome.file,
                                    (f"  {outcome.reason}" if outcome.reason else "", "dim")))


class JsonView:
    """One JSON line per file, with its last word."""

    def __init__(self, out: Output) -> None:
        self.out = out

    def sending(self, file: LocalFile) -> BytesSent:
        return lambda sent: None

    def sent(self, file: LocalFile, outcome: Outcome, final: bool) -> None:
        if final:
            self.out.data(outcome.as_json())

    def indexed(self, file: LocalFile, outcome: Outcome) -> None:
        self.out.data(outcome.as_json())


class ProgressView:
    """A bar per file being sent and one for the whole (bytes), with a line per file as it ends."""

    def __init__(self, out: Output, files: list[LocalFile], wait: bool) -> None:
        self.out = out
        self.wait = wait
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                                 TransferSpeedColumn(), TimeRemainingColumn(),
                                 console=out.console, transient=True)
        self.files = len(files)
        self.counts: Counter[str] = Counter()
        self.overall = self.progress.add_task(self._overall(), total=sum(file.size for file in files))
        self.bars: dict[Path, TaskID] = {}
        self.sent_bytes: Counter[Path] = Counter()

    def __enter__(self) -> ProgressView:
        self.progress.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.progress.stop()

    def sending(self, file: LocalFile) -> BytesSent:
        self.bars[file.path] = self.progress.add_task(_shorten(file.shown), total=file.size)

        def advance(count: int) -> None:
            self.sent_bytes[file.path] += count
            self.progress.advance(self.bars[file.path], count)
            self.progress.advance(self.overall, count)

        return advance

    def sent(self, file: LocalFile, outcome: Outcome, final: bool) -> None:
        if file.path in self.bars:
            self.progress.remove_task(self.bars.pop(file.path))
        # Skipped and failed files count as done, so that the whole bar ends full.
        self.progress.advance(self.overall, file.size - self.sent_bytes[file.path])
        self.counts["done"] += 1
        self.progress.update(self.overall, description=self._overall())
        # The bars' own console: the line goes above them.
        print_outcome(self.out, outcome)

    def indexed(self, file: LocalFile, outcome: Outcome) -> None:
        self.counts["indexed"] += 1
        self.progress.update(self.overall, description=self._overall())
        print_outcome(self.out, outcome, "failed" if outcome.result == "failed" else "indexed")

    def _overall(self) -> str:
        text = f"{self.counts['done']}/{self.files} files"
        return text + (f", {self.counts['indexed']} indexed" if self.wait else "")


def _shorten(shown: str, width: int = 32) -> str:
    return shown if len(shown) <= width else "…" + shown[-(width - 1):]
