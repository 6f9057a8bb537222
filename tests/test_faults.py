"""A backend killed mid-traffic: the gateway answers 503 quickly while it is
down, clients that retry with their Idempotency-Key get every message
answered exactly once after it is back, and every document uploaded meanwhile
is indexed exactly once: nothing accepted is lost or duplicated."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import asyncpg
import httpx
import pytest

from scripts.mesh_process import mesh_env, start_mesh
from scripts.postgres_cluster import PrivateCluster, private_cluster

PASSWORD = "faults are a fact of life"
POLICY = b"# Expenses\n\nMeals on business trips are reimbursed up to 45 euros a day.\n"
RETRYABLE = {409, 429, 502, 503, 504}  # 409: the first try of the same key is still being answered


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    env = mesh_env(tmp_path_factory.mktemp("faults"), SAGEMESH_LOG_LEVEL="WARNING", SAGEMESH_RATE_LIMITS="false",
                   SAGEMESH_RETRY_INITIAL_SECONDS="0.2", SAGEMESH_RETRY_MAX_SECONDS="1")
    mesh = start_mesh(env)
    yield mesh
    mesh.stop()


async def sign_in(client: httpx.AsyncClient, email: str) -> dict[str, str]:
    await client.post("/api/v1/auth/register", json={"email": email, "password": PASSWORD})
    login = await client.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD})
    return {"Authorization": f"Bearer {login.json()['accessToken']}"}


async def keep_sending(client: httpx.AsyncClient, auth: dict[str, str], conversation: str, name: str,
                       stop: asyncio.Event, refusals: Counter, accepted: list[str]) -> None:
    """Sends question after question, each until accepted (same Idempotency-Key), until `stop`."""
    number = 0
    while not stop.is_set():
        number += 1
        content = f"Question {name}-{number}: how much are meals reimbursed?"
        reply = await until_accepted(lambda: client.post(
            f"/api/v1/conversations/{conversation}/messages", json={"content": content},
            headers={**auth, "Idempotency-Key": f"{conversation}-{name}-{number}"}), refusals)
        assert reply.status_code == 200, reply.text
        accepted.append(content)


async def every(client: httpx.AsyncClient, path: str, auth: dict[str, str], key: str) -> list[dict]:
    """All items of a listing, page after page."""
    items, token = [], ""
    while True:
        page = (await client.get(path, headers=auth, params={"pageSize": 100, "pageToken": token})).json()
        items += page[key]
        token = page.get("nextPageToken", "")
        if not token:
            return items


async def until_accepted(send, refusals: Counter, deadline_seconds: float = 90) -> httpx.Response:
    """What a careful client does: the same request again (same key) until it is accepted or refused."""
    deadline = time.monotonic() + deadline_seconds
    last = ""
    while True:
        try:
            response = await send()
            if response.status_code not in RETRYABLE:
                return response
            refusals[response.status_code] += 1
            last = f"{response.status_code} {response.text[:300]}"
        except httpx.TransportError as error:
            refusals["transport"] += 1
            last = repr(error)
        assert time.monotonic() < deadline, f"never accepted; the last refusal: {last}"
        await asyncio.sleep(0.3)


async def test_killing_the_rag_engine_mid_traffic_loses_and_duplicates_nothing(mesh):
    async with httpx.AsyncClient(base_url=mesh.url, timeout=60) as client:
        auth = await sign_in(client, "fay@example.com")
        kb = (await client.post("/api/v1/knowledge/bases", headers=auth, json={"name": "policies"})).json()["id"]
        first = await client.post(f"/api/v1/knowledge/bases/{kb}/documents", headers=auth,
                                  files={"file": ("policy.md", POLICY, "text/markdown")})
        async with client.stream("GET", f"/api/v1/knowledge/documents/{first.json()['documentId']}/status:watch",
                                  headers=auth) as watch:
            _ = [line async for line in watch.aiter_lines()]
        conversations = [(await client.post("/api/v1/conversations", headers=auth, json={"kbIds": [kb]})).json()["id"]
                         for _ in range(3)]

        stop = asyncio.Event()
        refusals: Counter = Counter()
        accepted: dict[str, list[str]] = {c: [] for c in conversations}
        uploaded: list[str] = []

        async def uploader() -> None:
            number = 0
            while not stop.is_set():
                number += 1
                body = f"# Note {number}\n\nTaxis after {number} pm are reimbursed.\n".encode()
                reply = await until_accepted(lambda: client.post(
                    f"/api/v1/knowledge/bases/{kb}/documents", headers=auth,
                    files={"file": (f"note-{number}.md", body, "text/markdown")}), refusals)
                assert reply.status_code == 200, reply.text
                uploaded.append(reply.json()["documentId"])
                await asyncio.sleep(0.2)

        workers = [asyncio.create_task(keep_sending(client, auth, c, "r", stop, refusals, accepted[c]))
                   for c in conversations] + [asyncio.create_task(uploader())]
        await asyncio.sleep(2)
        await asyncio.to_thread(mesh.kill, "rag_engine")
        # While it is down a route that needs it is a quick 503, not a hang.
        started = time.monotonic()
        down = await client.post("/api/v1/rag/retrieve", headers=auth, json={"query": "meals", "kbIds": [kb]})
        assert down.status_code == 503 and "rag_engine" in down.json()["message"]
        assert time.monotonic() - started < 3
        await asyncio.sleep(2)
        await asyncio.to_thread(mesh.start, "rag_engine")
        await asyncio.to_thread(mesh.wait_serving, "rag_engine")
        await asyncio.sleep(2)
        stop.set()
        await asyncio.gather(*workers)
        assert refusals[503] >= 1, refusals  # the traffic did meet the outage, and retried through it

        # Every accepted message is stored once, with one answer.
        for conversation, contents in accepted.items():
            listed = await every(client, f"/api/v1/conversations/{conversation}/messages", auth, "messages")
            questions = [m for m in listed if m["role"] == "MESSAGE_ROLE_USER"]
            answers = Counter(m["parentId"] for m in listed if m["role"] == "MESSAGE_ROLE_ASSISTANT")
            assert [m["content"] for m in questions] == contents
            assert all(answers[m["id"]] == 1 for m in questions) and sum(answers.values()) == len(questions)
        assert sum(len(c) for c in accepted.values()) >= 3

        # Every document uploaded is indexed exactly once; the queue drains.
        for document in uploaded:
            async with client.stream("GET", f"/api/v1/knowledge/documents/{document}/status:watch",
                                      headers=auth) as watch:
                lines = [line async for line in watch.aiter_lines() if line]
            assert '"DOCUMENT_STATUS_INDEXED"' in lines[-1], lines[-1]
        documents = await every(client, f"/api/v1/knowledge/bases/{kb}/documents", auth, "documents")
        assert len(documents) == len(uploaded) + 1 and len({d["id"] for d in documents}) == len(documents)
        assert all(d["chunkCount"] == d["vectorCount"] >= 1 for d in documents)
        found = await client.post("/api/v1/rag/retrieve", headers=auth,
                                  json={"query": "taxis reimbursed", "kbIds": [kb], "topK": 100})
        assert found.status_code == 200, found.text
        indexed_chunks = Counter(r["documentId"] for r in found.json()["results"])
        assert all(count == 1 for count in indexed_chunks.values()), indexed_chunks


@pytest.fixture(scope="module")
def postgres_mesh(tmp_path_factory):
    """The mesh on a PostgreSQL cluster of the test's own, which it may restart: the machine's
    cluster serves other tests and other work."""
    with private_cluster("sagemesh_faults") as cluster:
        env = mesh_env(tmp_path_factory.mktemp("faults-pg"), SAGEMESH_LOG_LEVEL="WARNING",
                       SAGEMESH_RATE_LIMITS="false", SAGEMESH_DATABASE_URL=cluster.url)
        mesh = start_mesh(env)
        yield mesh, cluster
        mesh.stop()


async def postgres_started_at(cluster: PrivateCluster) -> str:
    admin = await asyncpg.connect(cluster.url)
    try:
        return str(await admin.fetchval("SELECT pg_postmaster_start_time()"))
    finally:
        await admin.close()


async def test_postgresql_restarted_under_the_services_loses_and_duplicates_nothing(postgres_mesh):
    mesh, cluster = postgres_mesh
    async with httpx.AsyncClient(base_url=mesh.url, timeout=60) as client:
        auth = await sign_in(client, "gus@example.com")
        conversation = (await client.post("/api/v1/conversations", headers=auth, json={})).json()["id"]
        stop = asyncio.Event()
        refusals: Counter = Counter()
        accepted: list[str] = []

        workers = [asyncio.create_task(keep_sending(client, auth, conversation, name, stop, refusals, accepted))
                   for name in ("a", "b")]
        await asyncio.sleep(1.5)
        before = await postgres_started_at(cluster)
        await asyncio.to_thread(cluster.stop)
        await asyncio.to_thread(cluster.start)
        assert await postgres_started_at(cluster) != before  # it did restart under them
        await asyncio.sleep(3)
        stop.set()
        await asyncio.gather(*workers)
        listed = await every(client, f"/api/v1/conversations/{conversation}/messages", auth, "messages")
        questions = Counter(m["content"] for m in listed if m["role"] == "MESSAGE_ROLE_USER")
        assert questions == Counter(accepted), (questions, accepted)
        answers = Counter(m["parentId"] for m in listed if m["role"] == "MESSAGE_ROLE_ASSISTANT")
        assert all(n == 1 for n in answers.values()) and len(answers) == len(accepted)
        assert (await client.get("/api/v1/users/me", headers=auth)).status_code == 200
