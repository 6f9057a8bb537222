"""The contracts in proto/: lint, generated code, and the REST surface."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from google.api import annotations_pb2

from meshkit.topology import INTERNAL_METHODS, SERVICES
from sagemesh.agent.v1 import agent_pb2
from sagemesh.conversation.v1 import conversation_pb2
from sagemesh.identity.v1 import identity_pb2
from sagemesh.knowledge.v1 import knowledge_pb2
from sagemesh.rag_engine.v1 import rag_engine_pb2

ROOT = Path(__file__).resolve().parents[2]
FILES = [identity_pb2, conversation_pb2, knowledge_pb2, rag_engine_pb2, agent_pb2]


def test_buf_lint_is_clean():
    buf = ROOT / "node_modules" / ".bin" / "buf"
    result = subprocess.run([buf, "lint"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_generated_code_matches_the_contracts():
    result = subprocess.run(
        [sys.executable, "scripts/generate_protos.py", "--check"],
        cwd=ROOT, capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def all_methods():
    for module in FILES:
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                yield f"/{service.full_name}/{method.name}", method


def http_rule(method):
    options = method.GetOptions()
    return options.Extensions[annotations_pb2.http] if options.HasExtension(annotations_pb2.http) else None


def test_each_service_has_a_v1_contract():
    declared = {s.full_name for m in FILES for s in m.DESCRIPTOR.services_by_name.values()}
    assert declared == {info.grpc_service for info in SERVICES.values()}


@pytest.mark.parametrize("path,method", list(all_methods()), ids=lambda v: v if isinstance(v, str) else "")
def test_client_rpcs_are_annotated_and_internal_ones_are_not(path, method):
    rule = http_rule(method)
    if path in INTERNAL_METHODS:
        assert rule is None, f"{path} is internal and must not be exposed over REST"
    else:
        assert rule is not None and rule.WhichOneof("pattern"), f"{path} has no google.api.http rule"


REQUIRED_ROUTES = {
    ("post", "/api/v1/auth/register"): "/sagemesh.identity.v1.IdentityService/Register",
    ("post", "/api/v1/auth/login"): "/sagemesh.identity.v1.IdentityService/Login",
    ("post", "/api/v1/auth/refresh"): "/sagemesh.identity.v1.IdentityService/RefreshToken",
    ("get", "/api/v1/users/me"): "/sagemesh.identity.v1.IdentityService/GetMe",
    ("post", "/api/v1/conversations"): "/sagemesh.conversation.v1.ConversationService/CreateConversation",
    ("post", "/api/v1/conversations/{conversation_id}/messages"):
        "/sagemesh.conversation.v1.ConversationService/SendMessage",
    ("post", "/api/v1/knowledge/bases"): "/sagemesh.knowledge.v1.KnowledgeService/CreateKnowledgeBase",
    ("post", "/api/v1/knowledge/bases/{metadata.kb_id}/documents"):
        "/sagemesh.knowledge.v1.KnowledgeService/UploadDocument",
    ("get", "/api/v1/knowledge/documents/{document_id}/status"):
        "/sagemesh.knowledge.v1.KnowledgeService/GetDocumentStatus",
    ("post", "/api/v1/rag/query"): "/sagemesh.rag_engine.v1.RagEngineService/Query",
    ("post", "/api/v1/rag/retrieve"): "/sagemesh.rag_engine.v1.RagEngineService/Retrieve",
    ("post", "/api/v1/agent/execute"): "/sagemesh.agent.v1.AgentService/Execute",
}


def test_the_rest_routes_clients_rely_on_exist():
    routes = {}
    for path, method in all_methods():
        rule = http_rule(method)
        if rule is not None:
            verb = rule.WhichOneof("pattern")
            routes[(verb, getattr(rule, verb))] = path
    for route, rpc in REQUIRED_ROUTES.items():
        assert routes.get(route) == rpc, route


def test_every_internal_method_exists():
    assert INTERNAL_METHODS <= {path for path, _ in all_methods()}

