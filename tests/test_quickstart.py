"""The README's quick-start against the whole mesh as `make run` starts it,
over REST through the gateway: register, log in, upload a document, ask in a
conversation, get an answer whose citations point at that document."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest

from scripts.mesh_process import mesh_env, running_mesh

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "correct horse battery staple"
POLICY = b"""# Expenses

## Meals

Meals on business trips are reimbursed up to 45 euros a day.

## Hotels

The nightly hotel budget in Zurich is 240 francs.
"""


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    """`scripts/run_mesh.py` on free ports; yields the gateway's URL."""
    with running_mesh(mesh_env(tmp_path_factory.mktemp("mesh"), SAGEMESH_LOG_LEVEL="WARNING")) as running:
        yield running.url


async def login(client: httpx.AsyncClient, email: str) -> dict[str, str]:
    registered = await client.post("/api/v1/auth/register", json={"email": email, "password": PASSWORD})
    assert registered.status_code == 200, registered.text
    tokens = (await client.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD})).json()
    return {"Authorization": f"Bearer {tokens['accessToken']}"}


async def test_the_quick_start_works_end_to_end(mesh):
    async with httpx.AsyncClient(base_url=mesh, timeout=60) as client:
        ann = await login(client, "ann@example.com")
        kb = (await client.post("/api/v1/knowledge/bases", headers=ann, json={"name": "handbook"})).json()
        uploaded = await client.post(f"/api/v1/knowledge/bases/{kb['id']}/documents", headers=ann,
                                     files={"file": ("expenses.md", POLICY, "text/markdown")})
        document_id = uploaded.json()["documentId"]
        async with client.stream("GET", f"/api/v1/knowledge/documents/{document_id}/status:watch",
                                  headers=ann) as watch:
            statuses = [json.loads(line)["result"]["status"] async for line in watch.aiter_lines() if line]
        assert statuses[-1]["status"] == "DOCUMENT_STATUS_INDEXED", statuses[-1]

        conversation = (await client.post("/api/v1/conversations", headers=ann,
                                          json={"kbIds": [kb["id"]]})).json()
        asked = await client.post(f"/api/v1/conversations/{conversation['id']}/messages", headers=ann,
                                  json={"content": "How much are meals reimbursed per day?"})
        assert asked.status_code == 200, asked.text
        answer = asked.json()["message"]
        assert "45 euros" in answer["content"] and "[1]" in answer["content"]
        assert answer["sources"][0]["documentId"] == document_id

        # A follow-up, streamed as Server-Sent Events.
        async with client.stream("POST", f"/api/v1/conversations/{conversation['id']}/messages:stream",
                                  headers={**ann, "Accept": "text/event-stream"},
                                  json={"content": "And the hotel budget in Zurich?"}) as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            events = [json.loads(line[len("data: "):]) async for line in stream.aiter_lines()
                      if line.startswith("data: ")]
        assert "userMessage" in events[0]["result"] and "message" in events[-1]["result"]
        assert "240 francs" in events[-1]["result"]["message"]["content"]

        # The same as newline-delimited JSON, a follow-up that names its subject only in the turn before.
        async with client.stream("POST", f"/api/v1/conversations/{conversation['id']}/messages:stream",
                                  headers=ann, json={"content": "How much is it?"}) as stream:
            assert not stream.headers["content-type"].startswith("text/event-stream")
            lines = [json.loads(line)["result"] async for line in stream.aiter_lines() if line]
        assert "240 francs" in "".join(line.get("answerDelta", "") for line in lines)
        assert "240 francs" in lines[-1]["message"]["content"]

        # A retried send with its Idempotency-Key gets the first answer back.
        retry = {**ann, "Idempotency-Key": "send-42"}
        first = await client.post(f"/api/v1/conversations/{conversation['id']}/messages", headers=retry,
                                  json={"content": "Who reimburses meals?"})
        second = await client.post(f"/api/v1/conversations/{conversation['id']}/messages", headers=retry,
                                   json={"content": "Who reimburses meals?"})
        assert second.json()["message"]["id"] == first.json()["message"]["id"]
        listed = (await client.get(f"/api/v1/conversations/{conversation['id']}/messages", headers=ann)).json()
        assert len(listed["messages"]) == 8

        # The same first question in a new conversation is answered from the cache, until the base changes.
        async def ask_fresh(question: str) -> dict:
            fresh = (await client.post("/api/v1/conversations", headers=ann, json={"kbIds": [kb["id"]]})).json()
            reply = await client.post(f"/api/v1/conversations/{fresh['id']}/messages", headers=ann,
                                      json={"content": question})
            return reply.json()["message"]

        cached = await ask_fresh("How much are meals reimbursed per day?")
        assert cached["metrics"]["cacheHit"] and cached["content"] == answer["content"]
        more = await client.post(f"/api/v1/knowledge/bases/{kb['id']}/documents", headers=ann,
                                 files={"file": ("taxis.txt", b"Taxis are reimbursed after 10 pm.", "text/plain")})
        async with client.stream("GET", f"/api/v1/knowledge/documents/{more.json()['documentId']}/status:watch",
                                  headers=ann) as watch:
            _ = [line async for line in watch.aiter_lines()]
        assert not (await ask_fresh("How much are meals reimbursed per day?"))["metrics"]["cacheHit"]

        # The agent example: a lookup in the reports, then a computation over what it found.
        report = await client.post(f"/api/v1/knowledge/bases/{kb['id']}/documents", headers=ann, files={
            "file": ("q3-report.txt", b"Revenue was 3.75 million euros in Q2 2024 and 4.2 million euros in Q3 2024.",
                     "text/plain")})
        async with client.stream("GET", f"/api/v1/knowledge/documents/{report.json()['documentId']}/status:watch",
                                  headers=ann) as watch:
            _ = [line async for line in watch.aiter_lines()]
        executed = await client.post("/api/v1/agent/execute", headers=ann, json={
            "task": "Look up last quarter's revenue figures in our reports and compute the growth rate",
            "kbIds": [kb["id"]]})
        assert executed.status_code == 200, executed.text
        run = executed.json()
        assert run["status"] == "RUN_STATUS_COMPLETED", run
        assert [step["tool"] for step in run["plan"]] == ["knowledge_base", "calculator"]
        assert run["finalResult"] == "(4.2 - 3.75) / 3.75 * 100 = 12"
        kept = await client.get(f"/api/v1/agent/runs/{run['taskId']}", headers=ann)
        assert kept.json()["finalResult"] == run["finalResult"]

        # An agent conversation hands the message to the agent as a task.
        agent_conversation = (await client.post("/api/v1/conversations", headers=ann,
                                                json={"mode": "CONVERSATION_MODE_AGENT"})).json()
        tasked = await client.post(f"/api/v1/conversations/{agent_conversation['id']}/messages", headers=ann,
                                   json={"content": "What is 15% of 80?"})
        assert tasked.json()["message"]["content"] == "15% of 80 = 12"
        assert tasked.json()["message"]["metrics"]["generator"] == "agent"

        # Another user of the same tenant cannot read it.
        bob = await login(client, "bob@example.com")
        hidden = await client.get(f"/api/v1/conversations/{conversation['id']}", headers=bob)
        assert hidden.status_code == 404


async def test_a_client_that_leaves_mid_stream_still_gets_its_answer_stored(mesh):
    async with httpx.AsyncClient(base_url=mesh, timeout=60) as client:
        carl = await login(client, "carl@example.com")
        conversation = (await client.post("/api/v1/conversations", headers=carl, json={})).json()
        async with client.stream("POST", f"/api/v1/conversations/{conversation['id']}/messages:stream",
                                 headers=carl, json={"content": "How much are meals reimbursed?"}) as stream:
            async for line in stream.aiter_lines():
                if line:
                    break  # the stored user message: leave now
        for _ in range(50):
            listed = (await client.get(f"/api/v1/conversations/{conversation['id']}/messages",
                                       headers=carl)).json()
            if len(listed.get("messages", [])) == 2:
                break
            await asyncio.sleep(0.1)
        assert [m["role"] for m in listed["messages"]] == ["MESSAGE_ROLE_USER", "MESSAGE_ROLE_ASSISTANT"]


async def test_the_agent_over_rest_computes_lists_its_tools_and_stops_at_max_steps(mesh):
    async with httpx.AsyncClient(base_url=mesh, timeout=60) as client:
        dana = await login(client, "dana@example.com")
        tools = (await client.get("/api/v1/agent/tools", headers=dana)).json()["tools"]
        assert {t["name"] for t in tools} == {"calculator", "current_time", "knowledge_base", "http_get"}
        assert next(t for t in tools if t["name"] == "calculator")["inputSchema"]["required"] == ["expression"]

        computed = (await client.post("/api/v1/agent/execute", headers=dana,
                                      json={"task": "What is 15% of 80?", "tools": ["calculator"]})).json()
        assert computed["status"] == "RUN_STATUS_COMPLETED" and computed["finalResult"] == "15% of 80 = 12"

        stopped = (await client.post("/api/v1/agent/execute", headers=dana, json={
            "task": "compute 1 + 1; compute 2 + 2; compute 3 + 3", "maxSteps": 2})).json()
        assert stopped["status"] == "RUN_STATUS_STOPPED" and "max_steps (2)" in stopped["statusReason"]

        needs_model = (await client.post("/api/v1/agent/execute", headers=dana,
                                         json={"task": "Write a haiku about the office"})).json()
        assert needs_model["status"] == "RUN_STATUS_FAILED" and "language model" in needs_model["statusReason"]

        refused = await client.post("/api/v1/agent/execute", headers=dana,
                                    json={"task": "1 + 1", "tools": ["shell"]})
        assert refused.status_code == 400 and "shell" in refused.json()["message"]
