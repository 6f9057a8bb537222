"""The transport through the REST/JSON gateway (the default), with httpx.

Routes are the contracts' google.api.http annotations (see /openapi.json).
Failures arrive as google.rpc.Status JSON ({code, message}); server streams as
newline-delimited JSON, one {"result": …} per message and {"error": Status}
if the call fails midway.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx

from sagemesh_cli.credentials import Credentials
from sagemesh_cli.errors import ApiError, busy_of, code_name
from sagemesh_cli.transports.base import (
    ANSWER_SECONDS,
    PAGE_SIZE,
    UPLOAD_SECONDS,
    WATCH_SECONDS,
    BytesSent,
    FilePieces,
    Transport,
)
from sagemesh_sdk.busy import Busy, BusyGate

# Answers and agent runs may take minutes (the conversation service allows 120 s);
# connecting must not: an unreachable gateway is reported at once.
TIMEOUT = httpx.Timeout(connect=5, read=180, write=180, pool=None)
# A stream may be quiet for long (a status watch waits for the next stage): its
# deadline (Grpc-Timeout) bounds it instead.
STREAM_TIMEOUT = httpx.Timeout(connect=5, read=None, write=180, pool=None)

# For error bodies that are not a google.rpc.Status (a proxy in front of the gateway).
_CODE_BY_HTTP_STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
                        404: "NOT_FOUND", 409: "ALREADY_EXISTS", 413: "INVALID_ARGUMENT",
                        429: "RESOURCE_EXHAUSTED", 499: "CANCELLED", 501: "UNIMPLEMENTED",
                        502: "UNAVAILABLE", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}


class RestTransport(Transport):
    def __init__(self, url: str, credentials: Credentials) -> None:
        self.url = url.rstrip("/")
        self.describe = f"the gateway at {self.url}"
        self.credentials = credentials
        self.client = httpx.AsyncClient(base_url=self.url, timeout=TIMEOUT)
        # Over a rate limit (429), every call of this command waits as Retry-After says.
        self.gate = BusyGate()

    async def close(self) -> None:
        await self.client.aclose()

    # identity

    async def register(self, email: str, password: str, display_name: str, tenant: str) -> dict:
        body = {"email": email, "password": password, "displayName": display_name, "tenantName": tenant}
        return await self._json("POST", "/api/v1/auth/register", json=body, auth=False)

    async def login(self, email: str, password: str, tenant: str) -> dict:
        body = {"email": email, "password": password, "tenantName": tenant}
        return await self._json("POST", "/api/v1/auth/login", json=body, auth=False)

    async def refresh(self, refresh_token: str) -> dict:
        return await self._json("POST", "/api/v1/auth/refresh", json={"refreshToken": refresh_token}, auth=False)

    async def logout(self, refresh_token: str) -> None:
        await self._json("POST", "/api/v1/auth/logout", json={"refreshToken": refresh_token}, auth=False)

    async def me(self) -> dict:
        return await self._json("GET", "/api/v1/users/me")

    # knowledge

    async def create_knowledge_base(self, name: str, description: str) -> dict:
        return await self._json("POST", "/api/v1/knowledge/bases", json={"name": name, "description": description})

    async def list_knowledge_bases(self, page_token: str) -> dict:
        return await self._json("GET", "/api/v1/knowledge/bases", params=_page(page_token))

    async def delete_knowledge_base(self, kb_id: str) -> None:
        await self._json("DELETE", f"/api/v1/knowledge/bases/{kb_id}")

    async def list_documents(self, kb_id: str, page_token: str) -> dict:
        return await self._json("GET", f"/api/v1/knowledge/bases/{kb_id}/documents", params=_page(page_token))

    async def upload_document(self, kb_id: str, path: Path, filename: str, progress: BytesSent) -> dict:
        # The multipart body is streamed rather than built by httpx, so that the file is
        # never held whole and every piece is counted as it goes.
        boundary = secrets.token_hex(16)
        head, tail = _multipart_frame(boundary, filename)
        pieces = FilePieces(path, progress)

        async def body() -> AsyncIterator[bytes]:
            yield head
            async for piece in pieces:
                yield piece
            yield tail

        headers = {"Content-Type": f"multipart/form-data; boundary={boundary}",
                   "Content-Length": str(len(head) + path.stat().st_size + len(tail)), **_deadline(UPLOAD_SECONDS)}
        return await self._json("POST", f"/api/v1/knowledge/bases/{kb_id}/documents",
                                content=body, headers=headers)

    async def document(self, document_id: str) -> dict:
        return await self._json("GET", f"/api/v1/knowledge/documents/{document_id}")

    async def supported_types(self) -> list[dict]:
        return (await self._json("GET", "/api/v1/knowledge/supported-types")).get("types", [])

    def watch_document_status(self, document_id: str) -> AsyncIterator[dict]:
        return self._stream("GET", f"/api/v1/knowledge/documents/{document_id}/status:watch",
                            headers=_deadline(WATCH_SECONDS))

    # answers

    def stream_query(self, query: str, kb_ids: list[str]) -> AsyncIterator[dict]:
        return self._stream("POST", "/api/v1/rag/query:stream", json={"query": query, "kbIds": kb_ids},
                            headers=_deadline(ANSWER_SECONDS))

    async def create_conversation(self, kb_ids: list[str], title: str) -> dict:
        return await self._json("POST", "/api/v1/conversations", json={"kbIds": kb_ids, "title": title})

    def stream_message(self, conversation_id: str, content: str, kb_ids: list[str]) -> AsyncIterator[dict]:
        return self._stream("POST", f"/api/v1/conversations/{conversation_id}/messages:stream",
                            json={"content": content, "kbIds": kb_ids}, headers=_deadline(ANSWER_SECONDS))

    def stream_execute(self, task: str, kb_ids: list[str], tools: list[str], mode: str,
                       max_steps: int) -> AsyncIterator[dict]:
        body = {"task": task, "kbIds": kb_ids, "tools": tools, "mode": mode, "maxSteps": max_steps}
        return self._stream("POST", "/api/v1/agent/execute:stream", json=body, headers=_deadline(ANSWER_SECONDS))

    # operations

    async def health(self) -> dict:
        # 503 is an answer here too: the report says which process is not serving.
        response = await self._send("GET", "/api/v1/health", None, None, {})
        try:
            await _read(response, self.describe)
        finally:
            await response.aclose()
        try:
            body = response.json()
        except ValueError:
            body = {}
        if response.status_code in (200, 503) and "services" in body:
            return body
        if response.status_code == 404:
            raise ApiError(f"{self.describe} has no /api/v1/health: it is older than this command",
                           "UNIMPLEMENTED", "HTTP 404")
        raise _api_error(response)

    # plumbing

    async def _json(self, method: str, path: str, *, auth: bool = True, content: Callable | None = None,
                    **request) -> dict:
        response = await self._open(method, path, auth, content, request)
        try:
            body = await _read(response, self.describe)
        finally:
            await response.aclose()
        return json.loads(body) if body else {}

    async def _stream(self, method: str, path: str, **request) -> AsyncIterator[dict]:
        response = await self._open(method, path, True, None, {**request, "timeout": STREAM_TIMEOUT})
        try:
            async for line in _lines(response, self.describe):
                if not line:
                    continue
                event = json.loads(line)
                if "error" in event:
                    status = event["error"]
                    raise ApiError(status.get("message", ""), code_name(status.get("code", 2)), "in the stream")
                yield event["result"]
        finally:
            await response.aclose()

    async def _open(self, method: str, path: str, auth: bool, content: Callable | None,
                    request: dict) -> httpx.Response:
        """The response to a request whose status says it succeeded, its body not read yet.
        `content` makes the body (afresh for a retry with a renewed token)."""

        async def attempt(token: str | None) -> httpx.Response:
            response = await self._send(method, path, token, content, request)
            if response.is_error:
                await response.aclose()
                raise _api_error(response)
            return response

        async def call() -> httpx.Response:
            if not auth:
                return await attempt(None)
            return await self.credentials.authorized(self.refresh, attempt)

        return await self.gate.call(call, busy_of)

    async def _send(self, method: str, path: str, token: str | None, content: Callable | None,
                    request: dict) -> httpx.Response:
        """The response, streaming, with an error's body read already."""
        headers = {**request.get("headers", {}), **({"Authorization": f"Bearer {token}"} if token else {})}
        built = self.client.build_request(method, path, headers=headers, content=content() if content else None,
                                          **{key: value for key, value in request.items() if key != "headers"})
        try:
            response = await self.client.send(built, stream=True)
        except httpx.TransportError as error:
            raise _unreachable(error, self.describe) from None
        if response.is_error:
            try:
                await _read(response, self.describe)
            finally:
                await response.aclose()
        return response


async def _read(response: httpx.Response, describe: str) -> bytes:
    try:
        return await response.aread()
    except httpx.TransportError as error:
        raise _unreachable(error, describe) from None


async def _lines(response: httpx.Response, describe: str) -> AsyncIterator[str]:
    try:
        async for line in response.aiter_lines():
            yield line
    except httpx.TransportError as error:
        raise _unreachable(error, describe) from None


def _api_error(response: httpx.Response) -> ApiError:
    origin = f"HTTP {response.status_code}"
    # 429 only: a 413 is RESOURCE_EXHAUSTED too, and no wait makes a file smaller.
    busy = Busy(_seconds(response.headers.get("retry-after"))) if response.status_code == 429 else None
    try:
        status = response.json()
        return ApiError(str(status["message"]), code_name(int(status["code"])), origin, busy)
    except (ValueError, KeyError, TypeError):
        message = response.text.strip()[:200] or response.reason_phrase
        return ApiError(message, _CODE_BY_HTTP_STATUS.get(response.status_code, "UNKNOWN"), origin, busy)


def _seconds(retry_after: str | None) -> float | None:
    """Retry-After in seconds (its HTTP-date form is not one the gateway sends)."""
    try:
        return max(0.0, float(retry_after)) if retry_after else None
    except ValueError:
        return None


def _unreachable(error: httpx.TransportError, describe: str) -> ApiError:
    if isinstance(error, (httpx.ConnectError, httpx.ConnectTimeout)):
        return ApiError(f"cannot reach {describe}: is `make run` running?", "UNAVAILABLE", "no connection")
    if isinstance(error, httpx.TimeoutException):
        return ApiError(f"{describe} did not answer in time", "DEADLINE_EXCEEDED", type(error).__name__)
    return ApiError(f"the connection to {describe} failed" + (f": {error}" if str(error) else ""), "UNAVAILABLE",
                    type(error).__name__)


def _deadline(seconds: int) -> dict[str, str]:
    # Without it the gateway gives the call the mesh's default deadline (10 s).
    return {"Grpc-Timeout": f"{seconds}S"}


def _page(page_token: str) -> dict:
    return {"pageSize": PAGE_SIZE, **({"pageToken": page_token} if page_token else {})}


def _multipart_frame(boundary: str, filename: str) -> tuple[bytes, bytes]:
    """What comes before and after the file's bytes in a one-file multipart/form-data body.
    No content type is declared: the knowledge service goes by the extension."""
    quoted = filename.replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")
    head = (f"--{boundary}\r\n"
            f'Content-Disposition: form-data; name="file"; filename="{quoted}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n").encode()
    return head, f"\r\n--{boundary}--\r\n".encode()
