"""The upload engine against a stand-in transport: concurrency, resumption,
failures that stop one file only, and waits that outlast a broken stream."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

from sagemesh_cli.errors import ApiError
from sagemesh_cli.files import LocalFile
from sagemesh_cli.uploads import FAILED, INDEXED, Outcome, Uploader


class StandInKnowledge:
    """The knowledge RPCs an upload makes, in memory; `in_flight_peak` is the most uploads at once."""

    def __init__(self, documents: list[dict] = ()) -> None:
        self.documents = list(documents)
        self.in_flight = self.in_flight_peak = 0
        self.refuse: set[str] = set()  # filenames whose upload fails
        self.breaks: dict[str, int] = {}  # document id -> status watches that break off first

    async def list_documents(self, kb_id: str, page_token: str) -> dict:
        # Two pages, to follow next_page_token.
        half = len(self.documents) // 2
        if not page_token:
            return {"documents": self.documents[:half], "nextPageToken": "second" if half else ""}
        return {"documents": self.documents[half:], "nextPageToken": ""}

    async def upload_document(self, kb_id: str, path: Path, filename: str, progress) -> dict:
        self.in_flight += 1
        self.in_flight_peak = max(self.in_flight_peak, self.in_flight)
        try:
            await asyncio.sleep(0.01)
            if filename in self.refuse:
                raise ApiError("the file is empty", "INVALID_ARGUMENT", "HTTP 400")
            progress(path.stat().st_size)
            document = {"id": f"doc-{filename}", "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
            self.documents.append(document)
            return {"documentId": document["id"], "status": "DOCUMENT_STATUS_PENDING", "duplicate": False}
        finally:
            self.in_flight -= 1

    async def watch_document_status(self, document_id: str):
        yield {"status": {"documentId": document_id, "status": "DOCUMENT_STATUS_PARSING"}}
        if self.breaks.get(document_id):
            self.breaks[document_id] -= 1
            raise ApiError("max connection age", "UNAVAILABLE")
        yield {"status": {"documentId": document_id, "status": INDEXED}}


class Recorder:
    def __init__(self) -> None:
        self.sent_bytes = 0
        self.lines: list[tuple[str, Outcome, bool]] = []

    def sending(self, file: LocalFile):
        def count(size: int) -> None:
            self.sent_bytes += size
        return count

    def sent(self, file: LocalFile, outcome: Outcome, final: bool) -> None:
        self.lines.append(("sent", outcome, final))

    def indexed(self, file: LocalFile, outcome: Outcome) -> None:
        self.lines.append(("indexed", outcome, True))


def files_in(folder: Path, contents: dict[str, str]) -> list[LocalFile]:
    made = []
    for name, text in contents.items():
        (folder / name).write_text(text)
        made.append(LocalFile(folder / name, name, len(text)))
    return made


async def test_at_most_concurrency_files_go_at_once_and_a_failure_stops_only_its_file(tmp_path):
    knowledge = StandInKnowledge()
    knowledge.refuse = {"f3.txt"}
    files = files_in(tmp_path, {f"f{n}.txt": f"file {n}" for n in range(10)})
    view = Recorder()

    outcomes = await Uploader(knowledge, "kb", view, concurrency=3, wait=False).run(files)

    assert knowledge.in_flight_peak == 3
    assert [outcome.result for outcome in outcomes] == ["uploaded"] * 3 + ["failed"] + ["uploaded"] * 6
    assert outcomes[3].reason == "the file is empty (HTTP 400)"
    assert view.sent_bytes == sum(file.size for file in files) - files[3].size
    assert all(final for _, _, final in view.lines)


async def test_what_the_base_holds_is_skipped_but_a_failed_file_is_sent_again_and_the_first_of_two_copies_goes(
        tmp_path):
    files = files_in(tmp_path, {"a.txt": "same", "b.txt": "same", "c.txt": "kept", "d.txt": "broken"})
    knowledge = StandInKnowledge([
        {"id": "kept", "sha256": hashlib.sha256(b"kept").hexdigest(), "status": INDEXED},
        {"id": "broken", "sha256": hashlib.sha256(b"broken").hexdigest(), "status": FAILED,
         "error": "the document has no text"},
    ])

    outcomes = await Uploader(knowledge, "kb", Recorder(), concurrency=4, wait=False).run(files)

    assert [(o.file, o.result, o.reason) for o in outcomes] == [
        ("a.txt", "uploaded", ""),
        ("b.txt", "skipped", "same content as a.txt"),
        ("c.txt", "skipped", "already in the base"),
        # Its earlier ingestion failed: sent again, for the service to ingest again.
        ("d.txt", "uploaded", ""),
    ]
    assert outcomes[2].document_id == "kept"


async def test_waiting_for_indexing_outlasts_a_status_stream_that_breaks_off(tmp_path):
    knowledge = StandInKnowledge()
    knowledge.breaks = {"doc-a.txt": 2}
    view = Recorder()

    (outcome,) = await Uploader(knowledge, "kb", view, concurrency=1, wait=True).run(
        files_in(tmp_path, {"a.txt": "text"}))

    assert (outcome.result, outcome.status) == ("uploaded", INDEXED)
    assert [(kind, final) for kind, _, final in view.lines] == [("sent", False), ("indexed", True)]
