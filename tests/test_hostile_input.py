"""Malformed and malicious requests against the whole mesh as `make run`
starts it: each gets the right 4xx with a clear message, never a 500, a hang,
or another tenant's data; and the mesh still works afterwards."""

from __future__ import annotations

import asyncio
import base64
import json
import time

import httpx
import pytest

from scripts.mesh_process import mesh_env, running_mesh

PASSWORD = "hostile input passw0rd"
SQL = "'; DROP TABLE users; --"


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    # Rate limits off: this suite sends many requests from one address on purpose.
    with running_mesh(mesh_env(tmp_path_factory.mktemp("hostile"), SAGEMESH_LOG_LEVEL="WARNING",
                               SAGEMESH_RATE_LIMITS="false")) as running:
        yield running.url


async def sign_up(client: httpx.AsyncClient, name: str) -> dict[str, str]:
    email, tenant = f"{name}@example.com", f"{name}-{time.monotonic_ns()}"
    registered = await client.post("/api/v1/auth/register", json={
        "email": email, "password": PASSWORD, "tenantName": tenant})
    assert registered.status_code == 200, registered.text
    login = await client.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD, "tenantName": tenant})
    assert login.status_code == 200, login.text
    return {"Authorization": f"Bearer {login.json()['accessToken']}"}


@pytest.fixture(scope="module")
async def world(mesh):
    """Two tenants; the first owns a knowledge base with a document, a conversation and an agent run."""
    async with httpx.AsyncClient(base_url=mesh, timeout=60) as client:
        owner, intruder = await sign_up(client, "owner"), await sign_up(client, "intruder")
        kb = (await client.post("/api/v1/knowledge/bases", headers=owner, json={"name": "secrets"})).json()
        document = (await client.post(f"/api/v1/knowledge/bases/{kb['id']}/documents", headers=owner, files={
            "file": ("plan.md", b"# Plan\n\nThe merger code name is BLUEHERON.", "text/markdown")})).json()
        async with client.stream("GET", f"/api/v1/knowledge/documents/{document['documentId']}/status:watch",
                                  headers=owner) as watch:
            _ = [line async for line in watch.aiter_lines()]
        conversation = (await client.post("/api/v1/conversations", headers=owner, json={"kbIds": [kb["id"]]})).json()
        await client.post(f"/api/v1/conversations/{conversation['id']}/messages", headers=owner,
                          json={"content": "What is the merger code name?"})
        run = (await client.post("/api/v1/agent/execute", headers=owner, json={"task": "What is 2 + 2?"})).json()
    return {"url": mesh, "owner": owner, "intruder": intruder, "kb": kb["id"], "document": document["documentId"],
            "conversation": conversation["id"], "run": run["taskId"]}


def assert_refused(response: httpx.Response, status: int, words: str = "") -> None:
    assert response.status_code == status, f"{response.request.method} {response.request.url}: " \
                                           f"{response.status_code} {response.text[:300]}"
    body = response.json()
    assert body["message"] and isinstance(body["code"], int)
    assert words.lower() in body["message"].lower(), body["message"]


MALFORMED = [
    # (name, method, path, headers, body, status, words in the message)
    ("broken JSON", "POST", "/api/v1/conversations", {"content-type": "application/json"}, b'{"kbIds": [', 400, "json"),
    ("not an object", "POST", "/api/v1/conversations", {"content-type": "application/json"}, b'[1, 2]', 400, ""),
    ("wrong type", "POST", "/api/v1/rag/retrieve", {"content-type": "application/json"},
     b'{"query": "x", "topK": "ten"}', 400, "topK"),
    ("a number for a string", "POST", "/api/v1/conversations", {"content-type": "application/json"},
     b'{"title": 5}', 400, "title"),
    ("an unknown enum", "POST", "/api/v1/agent/execute", {"content-type": "application/json"},
     b'{"task": "2 + 2", "mode": "AGENT_MODE_CHAOS"}', 400, "mode"),
    ("invalid UTF-8", "POST", "/api/v1/conversations", {"content-type": "application/json"},
     b'{"title": "caf\xe9"}', 400, ""),
    ("deeply nested", "POST", "/api/v1/conversations", {"content-type": "application/json"},
     b'{"title": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", 400, ""),
    ("a body over the limit", "POST", "/api/v1/conversations", {"content-type": "application/json"},
     json.dumps({"title": "x" * 2_000_000}).encode(), 413, ""),
    ("a huge array", "POST", "/api/v1/rag/retrieve", {"content-type": "application/json"},
     json.dumps({"query": "x", "kbIds": [f"kb-{i}" for i in range(50_000)]}).encode(), 400, "knowledge bases"),
    ("many knowledge bases for the agent", "POST", "/api/v1/agent/execute", {"content-type": "application/json"},
     json.dumps({"task": "2 + 2", "kbIds": [f"kb-{i}" for i in range(50)]}).encode(), 400, "knowledge bases"),
    ("a question over the body limit", "POST", "/api/v1/rag/retrieve", {"content-type": "application/json"},
     json.dumps({"query": "why " * 300_000}).encode(), 413, ""),
    ("a long question", "POST", "/api/v1/rag/retrieve", {"content-type": "application/json"},
     json.dumps({"query": "why " * 20_000}).encode(), 400, "query"),
    ("a huge task", "POST", "/api/v1/agent/execute", {"content-type": "application/json"},
     json.dumps({"task": "add 1 " * 2000}).encode(), 400, "task"),
    ("max_steps out of range", "POST", "/api/v1/agent/execute", {"content-type": "application/json"},
     b'{"task": "2 + 2", "maxSteps": 100000}', 400, "max_steps"),
    ("negative page size", "GET", "/api/v1/conversations?pageSize=-5", {}, None, 400, "page"),
    ("a forged page token", "GET", "/api/v1/conversations?pageToken=' OR 1=1 --", {}, None, 400, "page"),
]


@pytest.mark.parametrize(("name", "method", "path", "headers", "body", "status", "words"), MALFORMED,
                         ids=[case[0] for case in MALFORMED])
async def test_malformed_requests_get_a_clear_4xx(world, name, method, path, headers, body, status, words):
    async with httpx.AsyncClient(base_url=world["url"], timeout=30) as client:
        response = await client.request(method, path, headers={**world["owner"], **headers}, content=body)
    assert_refused(response, status, words)


def forged_tokens(valid: str) -> dict[str, str]:
    header, payload, signature = valid.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))

    def encode(value: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return {
        "alg none": f"{encode({'alg': 'none', 'typ': 'JWT'})}.{payload}.",
        "HS256 with the public key": f"{encode({'alg': 'HS256', 'typ': 'JWT'})}.{payload}.{signature}",
        "another tenant's id written in": f"{header}.{encode({**claims, 'tid': 'someone-else'})}.{signature}",
        "expired, re-signed by nobody": f"{header}.{encode({**claims, 'exp': 1})}.{signature}",
        "not a JWT": "hello",
        "an unknown key id": f"{encode({'alg': 'EdDSA', 'kid': 'nope'})}.{payload}.{signature}",
    }


async def test_forged_and_tampered_tokens_are_refused(world):
    valid = world["owner"]["Authorization"].removeprefix("Bearer ")
    async with httpx.AsyncClient(base_url=world["url"], timeout=30) as client:
        for name, token in forged_tokens(valid).items():
            response = await client.get("/api/v1/conversations", headers={"Authorization": f"Bearer {token}"})
            assert response.status_code == 401, name
            assert response.headers["www-authenticate"] == "Bearer"
        assert (await client.get("/api/v1/conversations", headers=world["owner"])).status_code == 200


async def test_another_tenants_ids_find_nothing_on_any_route(world):
    kb, document, conversation, run = world["kb"], world["document"], world["conversation"], world["run"]
    attempts = [
        ("GET", f"/api/v1/knowledge/bases/{kb}", None),
        ("GET", f"/api/v1/knowledge/bases/{kb}/documents", None),
        ("DELETE", f"/api/v1/knowledge/bases/{kb}", None),
        ("GET", f"/api/v1/knowledge/documents/{document}", None),
        ("GET", f"/api/v1/knowledge/documents/{document}/status", None),
        ("POST", f"/api/v1/knowledge/documents/{document}:reparse", {}),
        ("DELETE", f"/api/v1/knowledge/documents/{document}", None),
        ("GET", f"/api/v1/conversations/{conversation}", None),
        ("GET", f"/api/v1/conversations/{conversation}/messages", None),
        ("POST", f"/api/v1/conversations/{conversation}/messages", {"content": "What is the merger code name?"}),
        ("DELETE", f"/api/v1/conversations/{conversation}", None),
        ("GET", f"/api/v1/agent/runs/{run}", None),
        ("POST", "/api/v1/conversations", {"kbIds": [kb]}),
    ]
    async with httpx.AsyncClient(base_url=world["url"], timeout=60) as client:
        for method, path, body in attempts:
            response = await client.request(method, path, headers=world["intruder"], json=body)
            assert_refused(response, 404)
            assert "BLUEHERON" not in response.text
        # Searching another tenant's base finds nothing of it, whatever the question.
        for route in ("/api/v1/rag/retrieve", "/api/v1/rag/query"):
            response = await client.post(route, headers=world["intruder"],
                                         json={"query": "merger code name", "kbIds": [kb]})
            assert response.status_code in (200, 404) and "BLUEHERON" not in response.text, response.text
        # Nor does naming it in a message of one's own conversation, or in an agent's task.
        conversation = await client.post("/api/v1/conversations", headers=world["intruder"], json={})
        asked = await client.post(f"/api/v1/conversations/{conversation.json()['id']}/messages",
                                  headers=world["intruder"], json={"content": "The merger code name?", "kbIds": [kb]})
        assert_refused(asked, 404)
        agent = await client.post("/api/v1/agent/execute", headers=world["intruder"],
                                  json={"task": "What is the merger code name in our documents?", "kbIds": [kb]})
        assert_refused(agent, 404)
        # And the owner still has everything.
        owned = await client.get(f"/api/v1/knowledge/documents/{document}", headers=world["owner"])
        assert owned.status_code == 200


async def test_sql_in_every_text_field_is_only_text(world):
    async with httpx.AsyncClient(base_url=world["url"], timeout=60) as client:
        refused = await client.post("/api/v1/auth/register", json={"email": f"{SQL}@example.com", "password": SQL})
        assert_refused(refused, 400, "email")
        login = await client.post("/api/v1/auth/login", json={"email": f"x@example.com{SQL}", "password": SQL})
        assert login.status_code in (400, 401)
        owner = world["owner"]
        kb = await client.post("/api/v1/knowledge/bases", headers=owner,
                               json={"name": "sql-test", "displayName": SQL, "description": SQL})
        assert kb.status_code == 200 and kb.json()["displayName"] == SQL
        conversation = await client.post("/api/v1/conversations", headers=owner, json={"title": SQL})
        assert conversation.status_code == 200 and conversation.json()["title"] == SQL
        asked = await client.post(f"/api/v1/conversations/{conversation.json()['id']}/messages", headers=owner,
                                  json={"content": SQL})
        assert asked.status_code == 200
        for route, body in [("/api/v1/rag/retrieve", {"query": SQL, "kbIds": [world["kb"]]}),
                            ("/api/v1/agent/execute", {"task": SQL})]:
            assert (await client.post(route, headers=owner, json=body)).status_code == 200
        # Everything is still there.
        listed = await client.get("/api/v1/conversations", headers=owner)
        assert SQL in [c["title"] for c in listed.json()["conversations"]]
        assert (await client.get("/api/v1/users/me", headers=owner)).status_code == 200


async def test_a_file_name_cannot_reach_outside_the_store(world, tmp_path):
    async with httpx.AsyncClient(base_url=world["url"], timeout=60) as client:
        for name in ("../../../../etc/passwd.md", "..\\..\\windows\\win.ini.md", "/etc/shadow.md", "a\x00b.md"):
            uploaded = await client.post(f"/api/v1/knowledge/bases/{world['kb']}/documents", headers=world["owner"],
                                         files={"file": (name, f"# {name}\n\nharmless".encode(), "text/markdown")})
            if uploaded.status_code == 200:
                stored = uploaded.json()["filename"] if "filename" in uploaded.json() else (await client.get(
                    f"/api/v1/knowledge/documents/{uploaded.json()['documentId']}", headers=world["owner"])
                ).json()["filename"]
                assert "/" not in stored and "\\" not in stored and "\x00" not in stored and ".." not in stored, stored
            else:
                assert_refused(uploaded, 400)


async def test_a_logged_out_sessions_access_token_is_refused_by_every_service_within_5_seconds(world):
    """Services verify access tokens on their own; logout must still end the token everywhere
    long before it expires (each service follows identity's revoked sessions)."""
    email, tenant = "leaver@example.com", f"leaver-{time.monotonic_ns()}"
    # One route of each service.
    routes = [("GET", "/api/v1/users/me", None), ("GET", "/api/v1/conversations", None),
              ("GET", "/api/v1/knowledge/bases", None), ("POST", "/api/v1/rag/retrieve", {"query": "anything"}),
              ("GET", "/api/v1/agent/tools", None)]
    async with httpx.AsyncClient(base_url=world["url"], timeout=60) as client:
        await client.post("/api/v1/auth/register", json={"email": email, "password": PASSWORD, "tenantName": tenant})
        login = (await client.post("/api/v1/auth/login", json={
            "email": email, "password": PASSWORD, "tenantName": tenant})).json()
        # A second session of the same user goes on: logout ends one session, not the user.
        other = (await client.post("/api/v1/auth/login", json={
            "email": email, "password": PASSWORD, "tenantName": tenant})).json()
        ended, going_on = ({"Authorization": f"Bearer {s['accessToken']}"} for s in (login, other))
        for method, path, body in routes:
            response = await client.request(method, path, headers=ended, json=body)
            assert response.status_code == 200, (path, response.text)

        assert (await client.post("/api/v1/auth/logout", json={"refreshToken": login["refreshToken"]})).status_code == 200
        started = time.monotonic()
        waiting = list(routes)
        while waiting and time.monotonic() - started < 5:
            for route in list(waiting):
                method, path, body = route
                response = await client.request(method, path, headers=ended, json=body)
                if response.status_code == 401:
                    assert "log in again" in response.json()["message"]
                    waiting.remove(route)
                else:
                    assert response.status_code == 200, (path, response.text)
            await asyncio.sleep(0.1)
        assert not waiting, f"still accepted {time.monotonic() - started:.1f} s after logout: {waiting}"
        for method, path, body in routes:
            assert (await client.request(method, path, headers=going_on, json=body)).status_code == 200, path
