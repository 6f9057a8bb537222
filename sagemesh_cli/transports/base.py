"""The one interface the commands talk to, whichever way the calls travel.

Every method is one RPC of the mesh. Replies are the proto3 JSON mapping
(lowerCamelCase keys, enums by name, 64-bit integers as strings), which is what
the gateway sends; the gRPC transport converts its messages to the same, so the
commands, and what `--json` prints, do not depend on the transport.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable
from pathlib import Path

# Hears how many bytes of the file were just sent (less than 0: it starts over, for a retry).
BytesSent = Callable[[int], None]

# The size of the pieces a file is sent in (the gateway's too).
PIECE_BYTES = 64 * 1024
# Items asked for per page of a list: the most the services serve (meshkit.paging.MAX_PAGE_SIZE).
PAGE_SIZE = 200

# Deadlines of the calls that may take long; any other call gets the mesh's default
# (SAGEMESH_DEFAULT_DEADLINE_SECONDS, 10 s), through the gateway as well.
ANSWER_SECONDS = 300  # ask, agent: a model may take minutes (a conversation's answer, 120 s)
UPLOAD_SECONDS = 3600  # one file: up to the 100 MB limit on a slow link
WATCH_SECONDS = 3600  # waiting for one document's ingestion: a long PDF on a busy worker


class Transport(ABC):
    # What the transport talks to, for messages ("the gateway at http://…").
    describe: str

    async def __aenter__(self) -> Transport:
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.close()

    @abstractmethod
    async def close(self) -> None: ...

    # identity
    @abstractmethod
    async def register(self, email: str, password: str, display_name: str, tenant: str) -> dict: ...

    @abstractmethod
    async def login(self, email: str, password: str, tenant: str) -> dict: ...

    @abstractmethod
    async def refresh(self, refresh_token: str) -> dict:
        """A new token pair for the refresh token (which is spent by it)."""

    @abstractmethod
    async def logout(self, refresh_token: str) -> None: ...

    @abstractmethod
    async def me(self) -> dict: ...

    # knowledge
    @abstractmethod
    async def create_knowledge_base(self, name: str, description: str) -> dict: ...

    @abstractmethod
    async def list_knowledge_bases(self, page_token: str) -> dict: ...

    @abstractmethod
    async def delete_knowledge_base(self, kb_id: str) -> None: ...

    @abstractmethod
    async def list_documents(self, kb_id: str, page_token: str) -> dict: ...

    @abstractmethod
    async def upload_document(self, kb_id: str, path: Path, filename: str, progress: BytesSent) -> dict:
        """Sends the file; `progress` hears of every piece as it goes."""

    @abstractmethod
    async def document(self, document_id: str) -> dict: ...

    @abstractmethod
    async def supported_types(self) -> list[dict]:
        """The file types uploads may be: [{"contentType", "extensions": [".pdf"], "aliases"}]."""

    @abstractmethod
    def watch_document_status(self, document_id: str) -> AsyncIterator[dict]:
        """The document's status now, then on every change until indexed or failed."""

    # answers
    @abstractmethod
    def stream_query(self, query: str, kb_ids: list[str]) -> AsyncIterator[dict]:
        """rag_engine StreamQuery: {"answerDelta": …}s, then {"completed": QueryResponse}."""

    @abstractmethod
    async def create_conversation(self, kb_ids: list[str], title: str) -> dict: ...

    @abstractmethod
    def stream_message(self, conversation_id: str, content: str, kb_ids: list[str]) -> AsyncIterator[dict]:
        """conversation StreamMessage: {"userMessage"}, {"answerDelta"}s, then {"message"}."""

    @abstractmethod
    def stream_execute(self, task: str, kb_ids: list[str], tools: list[str], mode: str,
                       max_steps: int) -> AsyncIterator[dict]:
        """agent StreamExecute: {"plan"}s and {"step"}s as they happen, then {"completed": AgentRun}."""

    # operations
    @abstractmethod
    async def health(self) -> dict:
        """{"status": "SERVING" when all are, "services": {name: {"status", "version"}, …}}, as the
        gateway's GET /api/v1/health answers it; statuses are grpc.health.v1's, or the error's code."""


class FilePieces:
    """A file's bytes in pieces as they are sent, each reported to `progress`. Iterated
    again (a retry with a renewed token), it starts over and rewinds the progress."""

    def __init__(self, path: Path, progress: BytesSent) -> None:
        self.path = path
        self.progress = progress
        self.sent = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        if self.sent:
            self.progress(-self.sent)
            self.sent = 0
        with self.path.open("rb") as file:
            while piece := file.read(PIECE_BYTES):
                yield piece
                self.sent += len(piece)
                self.progress(len(piece))


async def every_page(list_page: Callable[[str], object], items: str) -> list[dict]:
    """All items of a paged list RPC (`list_page(page_token)`), following next_page_token."""
    collected: list[dict] = []
    token = ""
    while True:
        page = await list_page(token)
        collected.extend(page.get(items, []))
        token = page.get("nextPageToken", "")
        if not token:
            return collected
