"""The transport straight to the services over gRPC, with sagemesh_sdk.

Where the services are (--grpc / SAGEMESH_GRPC / `grpc` in the config file):

    HOST:PORT                            one address for all (an ingress routing by service)
    identity=HOST:PORT,knowledge=…       per service; the others as with `default`
    default                              SAGEMESH_<SERVICE>_ADDR, else `make run`'s ports

Replies are turned into the proto3 JSON mapping the gateway speaks, and the
RPCs whose REST routes answer one field (response_body) are unwrapped the same
way, so that commands and --json see the same whichever transport.

The access token is the CLI's (credentials.py), sent as `authorization` on each
call: the SDK leaves such calls' tokens to the caller, and the CLI's renewals
must be saved to the config file, under its lock, as they happen.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message
from sagemesh.agent.v1 import agent_pb2
from sagemesh.conversation.v1 import conversation_pb2
from sagemesh.identity.v1 import identity_pb2
from sagemesh.knowledge.v1 import knowledge_pb2
from sagemesh.rag_engine.v1 import rag_engine_pb2

from sagemesh_cli.credentials import Credentials
from sagemesh_cli.errors import ApiError, CliError, ExitCode, busy_of
from sagemesh_cli.transports.base import (
    ANSWER_SECONDS,
    PAGE_SIZE,
    UPLOAD_SECONDS,
    WATCH_SECONDS,
    BytesSent,
    FilePieces,
    Transport,
)
from sagemesh_sdk import Client
from sagemesh_sdk.busy import BusyGate
from sagemesh_sdk.calls import busy_of as sdk_busy_of

DEFAULT = "default"


def parse_addresses(spec: str) -> tuple[str | None, dict[str, str] | None]:
    """--grpc's value -> the SDK Client's (address, addresses)."""
    spec = spec.strip()
    if spec == DEFAULT:
        return None, None
    if "=" not in spec:
        return spec, None
    addresses = {}
    for pair in spec.split(","):
        name, _, address = pair.partition("=")
        if not name.strip() or not address.strip():
            raise CliError(f"--grpc: expected SERVICE=HOST:PORT, got {pair!r}", ExitCode.USAGE)
        addresses[name.strip()] = address.strip()
    return None, addresses


class GrpcTransport(Transport):
    def __init__(self, spec: str, credentials: Credentials) -> None:
        address, addresses = parse_addresses(spec)
        try:
            # Waiting when busy is the transport's, for streams too, not the SDK's for unary calls only.
            self.client = Client(address, addresses=addresses, busy=None)
        except ValueError as error:
            raise CliError(f"--grpc: {error}", ExitCode.USAGE) from None
        self.credentials = credentials
        self.describe = f"gRPC at {address}" if address else "the services over gRPC"
        self.gate = BusyGate()

    async def close(self) -> None:
        await self.client.close()

    # identity

    async def register(self, email: str, password: str, display_name: str, tenant: str) -> dict:
        request = identity_pb2.RegisterRequest(email=email, password=password, display_name=display_name,
                                               tenant_name=tenant)
        return await self._unary("identity", self.client.identity.Register, request, auth=False)

    async def login(self, email: str, password: str, tenant: str) -> dict:
        request = identity_pb2.LoginRequest(email=email, password=password, tenant_name=tenant)
        return await self._unary("identity", self.client.identity.Login, request, auth=False)

    async def refresh(self, refresh_token: str) -> dict:
        request = identity_pb2.RefreshTokenRequest(refresh_token=refresh_token)
        return await self._unary("identity", self.client.identity.RefreshToken, request, auth=False)

    async def logout(self, refresh_token: str) -> None:
        request = identity_pb2.LogoutRequest(refresh_token=refresh_token)
        await self._unary("identity", self.client.identity.Logout, request, auth=False)

    async def me(self) -> dict:
        return (await self._unary("identity", self.client.identity.GetMe, identity_pb2.GetMeRequest()))["user"]

    # knowledge

    async def create_knowledge_base(self, name: str, description: str) -> dict:
        request = knowledge_pb2.CreateKnowledgeBaseRequest(
            knowledge_base=knowledge_pb2.KnowledgeBase(name=name, description=description))
        return (await self._unary("knowledge", self.client.knowledge.CreateKnowledgeBase, request))["knowledgeBase"]

    async def list_knowledge_bases(self, page_token: str) -> dict:
        request = knowledge_pb2.ListKnowledgeBasesRequest(page_size=PAGE_SIZE, page_token=page_token)
        return await self._unary("knowledge", self.client.knowledge.ListKnowledgeBases, request)

    async def delete_knowledge_base(self, kb_id: str) -> None:
        request = knowledge_pb2.DeleteKnowledgeBaseRequest(kb_id=kb_id)
        await self._unary("knowledge", self.client.knowledge.DeleteKnowledgeBase, request)

    async def list_documents(self, kb_id: str, page_token: str) -> dict:
        request = knowledge_pb2.ListDocumentsRequest(kb_id=kb_id, page_size=PAGE_SIZE, page_token=page_token)
        return await self._unary("knowledge", self.client.knowledge.ListDocuments, request)

    async def upload_document(self, kb_id: str, path: Path, filename: str, progress: BytesSent) -> dict:
        pieces = FilePieces(path, progress)

        async def requests() -> AsyncIterator[knowledge_pb2.UploadDocumentRequest]:
            yield knowledge_pb2.UploadDocumentRequest(
                metadata=knowledge_pb2.DocumentMetadata(kb_id=kb_id, filename=filename))
            async for piece in pieces:
                yield knowledge_pb2.UploadDocumentRequest(data=piece)

        # A request stream is made afresh for each attempt (see _unary).
        return await self._unary("knowledge", self.client.knowledge.UploadDocument, requests,
                                 timeout=UPLOAD_SECONDS)

    async def document(self, document_id: str) -> dict:
        request = knowledge_pb2.GetDocumentRequest(document_id=document_id)
        return (await self._unary("knowledge", self.client.knowledge.GetDocument, request))["document"]

    async def supported_types(self) -> list[dict]:
        request = knowledge_pb2.ListSupportedTypesRequest()
        return (await self._unary("knowledge", self.client.knowledge.ListSupportedTypes, request))["types"]

    def watch_document_status(self, document_id: str) -> AsyncIterator[dict]:
        request = knowledge_pb2.WatchDocumentStatusRequest(document_id=document_id)
        return self._stream("knowledge", self.client.knowledge.WatchDocumentStatus, request, WATCH_SECONDS)

    # answers

    def stream_query(self, query: str, kb_ids: list[str]) -> AsyncIterator[dict]:
        request = rag_engine_pb2.StreamQueryRequest(query=query, kb_ids=kb_ids)
        return self._stream("rag_engine", self.client.rag_engine.StreamQuery, request, ANSWER_SECONDS)

    async def create_conversation(self, kb_ids: list[str], title: str) -> dict:
        request = conversation_pb2.CreateConversationRequest(
            conversation=conversation_pb2.Conversation(kb_ids=kb_ids, title=title))
        return (await self._unary("conversation", self.client.conversation.CreateConversation,
                                  request))["conversation"]

    def stream_message(self, conversation_id: str, content: str, kb_ids: list[str]) -> AsyncIterator[dict]:
        request = conversation_pb2.StreamMessageRequest(conversation_id=conversation_id, content=content,
                                                        kb_ids=kb_ids)
        return self._stream("conversation", self.client.conversation.StreamMessage, request, ANSWER_SECONDS)

    def stream_execute(self, task: str, kb_ids: list[str], tools: list[str], mode: str,
                       max_steps: int) -> AsyncIterator[dict]:
        request = agent_pb2.StreamExecuteRequest(task=task, kb_ids=kb_ids, tools=tools,
                                                 mode=agent_pb2.AgentMode.Value(mode), max_steps=max_steps)
        return self._stream("agent", self.client.agent.StreamExecute, request, ANSWER_SECONDS)

    # operations

    async def health(self) -> dict:
        reports = await self.client.health()
        return {"status": "SERVING" if all(report.serving for report in reports.values()) else "NOT_SERVING",
                "services": {name: {"status": report.status, "version": report.version}
                             for name, report in reports.items()}}

    # plumbing

    async def _unary(self, service: str, method: Callable, request: Message | Callable, *, auth: bool = True,
                     timeout: float | None = None) -> dict:
        """One call; `request` is a message, or makes the request stream of a client-streaming call."""

        async def attempt(token: str | None) -> dict:
            try:
                reply = await method(request() if callable(request) else request,
                                     metadata=_authorization(token), timeout=timeout)
            except grpc.aio.AioRpcError as error:
                raise self._error(service, error) from None
            return _as_json(reply)

        async def call() -> dict:
            if not auth:
                return await attempt(None)
            return await self.credentials.authorized(self.refresh, attempt)

        return await self.gate.call(call, busy_of)

    async def _stream(self, service: str, method: Callable, request: Message, timeout: float) -> AsyncIterator[dict]:
        async def first_reply(token: str) -> tuple[grpc.aio.UnaryStreamCall, object]:
            # A refused token shows on the first read: the retry with a renewed one happens before
            # anything was handed on.
            call = method(request, metadata=_authorization(token), timeout=timeout)
            try:
                return call, await call.read()
            except grpc.aio.AioRpcError as error:
                raise self._error(service, error) from None

        call, reply = await self.gate.call(lambda: self.credentials.authorized(self.refresh, first_reply), busy_of)
        try:
            while reply is not grpc.aio.EOF:
                yield _as_json(reply)
                reply = await call.read()
        except grpc.aio.AioRpcError as error:
            raise self._error(service, error) from None
        finally:
            call.cancel()

    def _error(self, service: str, error: grpc.aio.AioRpcError) -> ApiError:
        code = error.code()
        message = error.details() or code.name
        if code == grpc.StatusCode.UNAVAILABLE and "failed to connect" in message.lower():
            message = (f"cannot reach the {service} service at {self.client.addresses[service]}: "
                       "is `make run` running?")
        return ApiError(message, code.name, busy=sdk_busy_of(error))


def _authorization(token: str | None) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),) if token else ()


def _as_json(message: Message) -> dict:
    """The proto3 JSON mapping, unset fields included, as the gateway answers."""
    return json_format.MessageToDict(message, always_print_fields_with_no_presence=True)
