"""Every public RPC of every service through the client SDK, against the whole
mesh as `make run` starts it; and the SDK's health and token renewal there.

Public means every RPC that is not internal (meshkit.topology.INTERNAL_METHODS:
service-to-service calls, e.g. rag_engine's IndexChunks); tests/contracts holds
those to be exactly the RPCs without a google.api.http rule. The test records
the methods the SDK called and compares them with the contracts', so an RPC
added without being called here fails it.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import time
import urllib.request
from datetime import datetime, timezone

import grpc
import pytest

from gateway.server import service_descriptor
from meshkit.channel_policy import rewriting_interceptors
from meshkit.errors import ACCESS_TOKEN_EXPIRED
from meshkit.health import HealthReport
from meshkit.settings import MeshSettings
from meshkit.topology import INTERNAL_METHODS, SERVICES
from sagemesh.agent.v1 import agent_pb2 as agent
from sagemesh.conversation.v1 import conversation_pb2 as conversation
from sagemesh.identity.v1 import identity_pb2 as identity
from sagemesh.knowledge.v1 import knowledge_pb2 as knowledge
from sagemesh.rag_engine.v1 import rag_engine_pb2 as rag
from sagemesh_sdk import Client, Tokens
from scripts.mesh_process import mesh_env, running_mesh
from services.identity.domain import Role, User
from services.identity.tokens import AccessTokenIssuer, load_signing_key

PASSWORD = "correct horse battery staple"
POLICY = b"""# Expenses

## Meals

Meals on business trips are reimbursed up to 45 euros a day.

## Hotels

The nightly hotel budget in Zurich is 240 francs.
"""
# Long enough for the file to go up in several pieces.
PIECE_BYTES = 40
# Indexing a small file takes a second or two; a first answer a little more.
SLOW_CALL_SECONDS = 60


def public_methods() -> set[str]:
    every = {f"/{d.full_name}/{m.name}" for d in map(service_descriptor, SERVICES) for m in d.methods}
    return every - INTERNAL_METHODS


class CalledMethods:
    """An interceptor's worth of bookkeeping: every method the client calls."""

    def __init__(self) -> None:
        self.paths: set[str] = set()

    async def note(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        self.paths.add(details.method.decode())
        return details


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("mesh")
    with running_mesh(mesh_env(data_dir, SAGEMESH_LOG_LEVEL="WARNING")) as running:
        yield running, data_dir


@pytest.fixture
def called() -> CalledMethods:
    return CalledMethods()


@pytest.fixture
async def client(mesh, called):
    running, _ = mesh
    async with Client(addresses=running.addresses, interceptors=rewriting_interceptors(called.note)) as client:
        yield client


async def test_every_public_rpc_answers_through_the_sdk(client, called):
    await identity_calls(client, "sam@example.com")
    kb_id, document_id = await knowledge_calls(client)
    await rag_engine_calls(client, kb_id, document_id)
    await conversation_calls(client, kb_id, document_id)
    await agent_calls(client)
    await cleanup_calls(client, kb_id, document_id)
    assert called.paths == public_methods()


async def identity_calls(client: Client, email: str) -> None:
    registered = await client.identity.Register(identity.RegisterRequest(email=email, password=PASSWORD,
                                                                          display_name="Sam"))
    login = await client.login(email, PASSWORD)
    assert login.user.id == registered.user.id and client.tokens.access_token == login.access_token
    me = await client.identity.GetMe(identity.GetMeRequest())
    assert (me.user.id, me.user.email, me.user.display_name) == (registered.user.id, email, "Sam")

    renewed = await client.identity.RefreshToken(identity.RefreshTokenRequest(refresh_token=login.refresh_token))
    assert renewed.refresh_token != login.refresh_token and renewed.user.id == me.user.id
    client.tokens = Tokens.issued(renewed)
    assert (await client.identity.GetMe(identity.GetMeRequest())).user.id == me.user.id


async def knowledge_calls(client: Client) -> tuple[str, str]:
    created = await client.knowledge.CreateKnowledgeBase(knowledge.CreateKnowledgeBaseRequest(
        knowledge_base=knowledge.KnowledgeBase(name="handbook", description="travel rules")))
    kb_id = created.knowledge_base.id
    fetched = await client.knowledge.GetKnowledgeBase(knowledge.GetKnowledgeBaseRequest(kb_id=kb_id))
    assert (fetched.knowledge_base.name, fetched.knowledge_base.description) == ("handbook", "travel rules")
    listed = await client.knowledge.ListKnowledgeBases(knowledge.ListKnowledgeBasesRequest())
    assert [base.id for base in listed.knowledge_bases] == [kb_id]

    uploaded = await upload(client, kb_id, "expenses.md", POLICY)
    assert not uploaded.duplicate
    assert (await upload(client, kb_id, "again.md", POLICY)).document_id == uploaded.document_id  # same content
    statuses = await watch(client, uploaded.document_id)
    assert statuses[-1] == knowledge.DOCUMENT_STATUS_INDEXED

    document = (await client.knowledge.GetDocument(
        knowledge.GetDocumentRequest(document_id=uploaded.document_id))).document
    assert (document.filename, document.sha256, document.size_bytes) == (
        "expenses.md", hashlib.sha256(POLICY).hexdigest(), len(POLICY))
    status = await client.knowledge.GetDocumentStatus(
        knowledge.GetDocumentStatusRequest(document_id=uploaded.document_id))
    assert status.status == knowledge.DOCUMENT_STATUS_INDEXED and status.chunk_count > 0
    documents = await client.knowledge.ListDocuments(knowledge.ListDocumentsRequest(kb_id=kb_id))
    assert [d.id for d in documents.documents] == [uploaded.document_id]
    types = await client.knowledge.ListSupportedTypes(knowledge.ListSupportedTypesRequest())
    assert ".pdf" in {e for t in types.types for e in t.extensions}

    reparsed = await client.knowledge.ReparseDocument(
        knowledge.ReparseDocumentRequest(document_id=uploaded.document_id))
    assert reparsed.status == knowledge.DOCUMENT_STATUS_PENDING
    assert (await watch(client, uploaded.document_id))[-1] == knowledge.DOCUMENT_STATUS_INDEXED
    return kb_id, uploaded.document_id


async def upload(client: Client, kb_id: str, filename: str, content: bytes) -> knowledge.UploadDocumentResponse:
    """Client streaming: what the file is, then its bytes in pieces."""
    pieces = [content[i:i + PIECE_BYTES] for i in range(0, len(content), PIECE_BYTES)]
    requests = [knowledge.UploadDocumentRequest(metadata=knowledge.DocumentMetadata(kb_id=kb_id, filename=filename)),
                *(knowledge.UploadDocumentRequest(data=piece) for piece in pieces)]
    assert len(requests) > 3
    return await client.knowledge.UploadDocument(iter(requests))


async def watch(client: Client, document_id: str) -> list[int]:
    updates = client.knowledge.WatchDocumentStatus(knowledge.WatchDocumentStatusRequest(document_id=document_id),
                                                   timeout=SLOW_CALL_SECONDS)
    return [update.status.status async for update in updates]


async def rag_engine_calls(client: Client, kb_id: str, document_id: str) -> None:
    retrieved = await client.rag_engine.Retrieve(rag.RetrieveRequest(query="meal allowance", kb_ids=[kb_id]))
    assert retrieved.results[0].document_id == document_id and "45 euros" in retrieved.results[0].content

    answered = await client.rag_engine.Query(rag.QueryRequest(query="How much are meals reimbursed per day?",
                                                               kb_ids=[kb_id]), timeout=SLOW_CALL_SECONDS)
    assert "45 euros" in answered.answer and answered.sources[0].document_id == document_id

    events = [event async for event in client.rag_engine.StreamQuery(
        rag.StreamQueryRequest(query="What is the hotel budget in Zurich?", kb_ids=[kb_id], bypass_cache=True),
        timeout=SLOW_CALL_SECONDS)]
    deltas = [event.answer_delta for event in events if event.WhichOneof("event") == "answer_delta"]
    completed = events[-1].completed
    assert len(deltas) > 1 and "".join(deltas).strip() == completed.answer and "240 francs" in completed.answer


async def conversation_calls(client: Client, kb_id: str, document_id: str) -> None:
    created = await client.conversation.CreateConversation(conversation.CreateConversationRequest(
        conversation=conversation.Conversation(title="Expenses", kb_ids=[kb_id])))
    conversation_id = created.conversation.id
    fetched = await client.conversation.GetConversation(
        conversation.GetConversationRequest(conversation_id=conversation_id))
    assert (fetched.conversation.title, list(fetched.conversation.kb_ids)) == ("Expenses", [kb_id])
    listed = await client.conversation.ListConversations(conversation.ListConversationsRequest())
    assert [c.id for c in listed.conversations] == [conversation_id]

    sent = await client.conversation.SendMessage(conversation.SendMessageRequest(
        conversation_id=conversation_id, content="How much are meals reimbursed per day?"),
        timeout=SLOW_CALL_SECONDS)
    assert "45 euros" in sent.message.content and sent.message.sources[0].document_id == document_id
    assert sent.message.parent_id == sent.user_message.id

    events = [event async for event in client.conversation.StreamMessage(conversation.StreamMessageRequest(
        conversation_id=conversation_id, content="And the hotel budget in Zurich?"), timeout=SLOW_CALL_SECONDS)]
    kinds = [event.WhichOneof("event") for event in events]
    assert kinds[0] == "user_message" and kinds[-1] == "message" and set(kinds[1:-1]) == {"answer_delta"}
    assert "".join(event.answer_delta for event in events[1:-1]).strip() == events[-1].message.content
    assert "240 francs" in events[-1].message.content

    messages = (await client.conversation.ListMessages(
        conversation.ListMessagesRequest(conversation_id=conversation_id))).messages
    assert [m.content for m in messages] == [sent.user_message.content, sent.message.content,
                                             events[0].user_message.content, events[-1].message.content]

    await client.conversation.DeleteConversation(conversation.DeleteConversationRequest(conversation_id=conversation_id))
    with pytest.raises(grpc.aio.AioRpcError) as gone:
        await client.conversation.GetConversation(conversation.GetConversationRequest(conversation_id=conversation_id))
    assert gone.value.code() == grpc.StatusCode.NOT_FOUND


async def agent_calls(client: Client) -> None:
    tools = (await client.agent.ListTools(agent.ListToolsRequest())).tools
    assert {"calculator", "knowledge_base"} <= {tool.name for tool in tools}

    executed = (await client.agent.Execute(agent.ExecuteRequest(task="What is 15% of 80?", tools=["calculator"]),
                                           timeout=SLOW_CALL_SECONDS)).run
    assert executed.status == agent.RUN_STATUS_COMPLETED and executed.final_result == "15% of 80 = 12"
    kept = (await client.agent.GetRun(agent.GetRunRequest(task_id=executed.task_id))).run
    assert (kept.task, kept.final_result) == (executed.task, executed.final_result)

    events = [event async for event in client.agent.StreamExecute(
        agent.StreamExecuteRequest(task="compute 2 + 3", tools=["calculator"]), timeout=SLOW_CALL_SECONDS)]
    kinds = [event.WhichOneof("event") for event in events]
    assert kinds[0] == "plan" and kinds[-1] == "completed" and "step" in kinds
    assert events[-1].completed.status == agent.RUN_STATUS_COMPLETED and "5" in events[-1].completed.final_result


async def cleanup_calls(client: Client, kb_id: str, document_id: str) -> None:
    await client.knowledge.DeleteDocument(knowledge.DeleteDocumentRequest(document_id=document_id))
    with pytest.raises(grpc.aio.AioRpcError) as gone:
        await client.knowledge.GetDocument(knowledge.GetDocumentRequest(document_id=document_id))
    assert gone.value.code() == grpc.StatusCode.NOT_FOUND
    await client.knowledge.DeleteKnowledgeBase(knowledge.DeleteKnowledgeBaseRequest(kb_id=kb_id))
    assert not (await client.knowledge.ListKnowledgeBases(knowledge.ListKnowledgeBasesRequest())).knowledge_bases

    spent = client.tokens.refresh_token
    await client.logout()
    with pytest.raises(grpc.aio.AioRpcError) as ended:
        await client.identity.RefreshToken(identity.RefreshTokenRequest(refresh_token=spent))
    assert ended.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_health_gives_every_service_serving_and_its_version_over_grpc_and_rest(client, mesh):
    version = importlib.metadata.version("sagemesh")
    assert await client.health() == {name: HealthReport("SERVING", version) for name in client.addresses}
    running, _ = mesh
    with urllib.request.urlopen(f"{running.url}/api/v1/health", timeout=5) as reply:
        report = json.load(reply)
    assert report == {"status": "SERVING", "services": {
        name: {"status": "SERVING", "version": version} for name in ["gateway", *client.addresses]}}


async def test_an_expired_access_token_is_renewed_with_the_refresh_token(client, mesh):
    _, data_dir = mesh
    await client.identity.Register(identity.RegisterRequest(email="ria@example.com", password=PASSWORD))
    login = await client.login("ria@example.com", PASSWORD)
    # The same user's token as identity signs it, an hour past its expiry.
    settings = MeshSettings(_env_file=None, data_dir=data_dir)
    kid, key = load_signing_key(settings.keys_dir, None)
    user = User(login.user.id, login.user.tenant_id, login.user.tenant_name, login.user.email, "", Role.MEMBER,
                datetime.now(timezone.utc))
    expired = AccessTokenIssuer(kid, key, settings.jwt_issuer, settings.jwt_audience, 60).issue(
        user, "session", time.time() - 3600)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await client.identity.GetMe(identity.GetMeRequest(), metadata=[("authorization", f"Bearer {expired}")])
    assert refused.value.details() == ACCESS_TOKEN_EXPIRED  # what the SDK renews on

    client.tokens = Tokens(expired, login.refresh_token)
    me = await client.identity.GetMe(identity.GetMeRequest())
    assert me.user.id == login.user.id
    assert client.tokens.access_token not in (expired, login.access_token)
    assert client.tokens.refresh_token != login.refresh_token
