"""Mixed REST traffic through the gateway, as `make run` starts the mesh:
`python -m bench.load --users 32 --seconds 60`.

Each simulated user signs up, then loops over a weighted mix of what a web
app does (list conversations and knowledge bases, retrieve, ask a question the
cache has seen, ask a new one, upload a small document, read its profile) and
logs in again every 15 s, for the stated time: without pause by default, which
measures what the mesh can take, or pausing between requests as people do
(`--pause 1 3`: a random 1 to 3 s, as locust's `between(1, 3)`), which
measures what its users wait. It prints throughput, p50/p95/p99 by route and
the errors (any status other than 2xx, or no answer), and writes the table to
--out.

The rate limits stay as shipped but for two things a real deployment has and
one machine has not: each user comes from an address of its own (the gateway
trusts one proxy hop, and the bench says X-Forwarded-For), and the per-tenant
limit is raised, since all users are in one tenant.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench.refused import Refused
from scripts.mesh_process import mesh_env, running_mesh

PASSWORD = "load test password 42"
POLICY = b"""# Travel policy

## Meals
Meals on business trips are reimbursed up to 45 euros a day.

## Hotels
The nightly hotel budget in Zurich is 240 francs; elsewhere in Switzerland 180 francs.

## Trains
Train travel is second class, first class for journeys over four hours.
"""
CACHED_QUESTION = "How much are meals reimbursed per day?"
FRESH_TOPICS = ["hotel budget in Zurich", "train class for long journeys", "meal reimbursement", "hotels elsewhere"]
# Route -> weight of the mix.
MIX = {
    "GET /api/v1/conversations": 20,
    "GET /api/v1/knowledge/bases": 10,
    "POST /api/v1/rag/retrieve": 20,
    "POST messages (cached question)": 25,
    "POST messages (new question)": 10,
    "POST documents (upload)": 5,
    "GET /api/v1/users/me": 5,
}
LOGIN = "POST /api/v1/auth/login"
LOGIN_EVERY_SECONDS = 15


@dataclass
class Results:
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    # Refused by a rate limit (429): the limits at work, counted apart from errors.
    limited: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def record(self, route: str, started: float, response: httpx.Response | None, problem: str = "") -> None:
        if response is not None and response.status_code == 429:
            self.limited[route] += 1
            return
        self.latencies[route].append(time.perf_counter() - started)
        if response is None or not response.is_success:
            self.errors[route].append(problem or f"{response.status_code}: {response.text[:120]}")


@dataclass
class User:
    client: httpx.AsyncClient
    email: str
    headers: dict[str, str]
    conversation_id: str
    kb_id: str
    # The cached question is asked first in a conversation (the cache key includes the history):
    # one is made before each such request, outside its timing.
    fresh_conversation_id: str = ""


async def sign_up(client: httpx.AsyncClient, kb_id: str | None, number: int) -> User:
    email = f"load-{uuid.uuid4().hex[:10]}@example.com"
    address = {"X-Forwarded-For": f"10.{number // 250}.{number % 250}.1"}
    registered = await client.post("/api/v1/auth/register", headers=address,
                                   json={"email": email, "password": PASSWORD})
    registered.raise_for_status()
    token = await client.post("/api/v1/auth/login", headers=address, json={"email": email, "password": PASSWORD})
    token.raise_for_status()
    headers = {**address, "Authorization": f"Bearer {token.json()['accessToken']}"}
    if kb_id is None:
        kb = await client.post("/api/v1/knowledge/bases", headers=headers, json={"name": "travel"})
        kb.raise_for_status()
        kb_id = kb.json()["id"]
    conversation = await client.post("/api/v1/conversations", headers=headers, json={"kbIds": [kb_id]})
    conversation.raise_for_status()
    return User(client, email, headers, conversation.json()["id"], kb_id)


def upload_request(user: User, content: bytes, name: str) -> httpx.Request:
    return user.client.build_request("POST", f"/api/v1/knowledge/bases/{user.kb_id}/documents",
                                     headers=user.headers, files={"file": (name, content, "text/markdown")})


def request_for(user: User, route: str) -> httpx.Request:
    """The request a route of the mix makes, built and not sent: a client that
    retries sends the same request again (bench/faults.py does)."""
    client, headers = user.client, user.headers
    if route == "GET /api/v1/conversations":
        return client.build_request("GET", "/api/v1/conversations", headers=headers)
    if route == "GET /api/v1/knowledge/bases":
        return client.build_request("GET", "/api/v1/knowledge/bases", headers=headers)
    if route == "POST /api/v1/rag/retrieve":
        return client.build_request("POST", "/api/v1/rag/retrieve", headers=headers,
                                    json={"query": f"{random.choice(FRESH_TOPICS)} {uuid.uuid4().hex[:4]}",
                                          "kbIds": [user.kb_id], "topK": 5})
    if route == "POST messages (cached question)":
        return client.build_request("POST", f"/api/v1/conversations/{user.fresh_conversation_id}/messages",
                                    headers=headers, json={"content": CACHED_QUESTION})
    if route == "POST messages (new question)":
        question = f"What does the policy say about {random.choice(FRESH_TOPICS)}? ({uuid.uuid4().hex[:6]})"
        return client.build_request("POST", f"/api/v1/conversations/{user.conversation_id}/messages",
                                    headers=headers, json={"content": question})
    if route == "POST documents (upload)":
        return upload_request(user, f"# Note {uuid.uuid4()}\n\nExpenses under 10 euros need no receipt.\n"
                              .encode(), "note.md")
    if route == LOGIN:
        return client.build_request("POST", "/api/v1/auth/login",
                                    headers={"X-Forwarded-For": headers["X-Forwarded-For"]},
                                    json={"email": user.email, "password": PASSWORD})
    if route == "GET /api/v1/users/me":
        return client.build_request("GET", "/api/v1/users/me", headers=headers)
    raise ValueError(route)


async def one_request(user: User, route: str) -> httpx.Response:
    return await user.client.send(request_for(user, route))


async def prepare(user: User, route: str) -> None:
    """What a request needs made first, outside its timing."""
    if route == "POST messages (cached question)":
        fresh = await user.client.post("/api/v1/conversations", headers=user.headers, json={"kbIds": [user.kb_id]})
        fresh.raise_for_status()
        user.fresh_conversation_id = fresh.json()["id"]


# Sends a route's request and records the outcome in the results: once (send_once), or
# as a client that retries would (bench/faults.py).
Sender = Callable[[User, str, httpx.Request, Results], Awaitable[object]]


async def send_once(user: User, route: str, request: httpx.Request, results: Results) -> httpx.Response | None:
    """Sends the request once and records it; the response, or None when there was none."""
    started = time.perf_counter()
    try:
        response = await user.client.send(request)
    except httpx.HTTPError as error:
        results.record(route, started, None, f"{type(error).__name__}: {error}")
        return None
    results.record(route, started, response)
    return response


async def drive(user: User, until: float, results: Results, mix: dict[str, int], send: Sender = send_once,
                pause: tuple[float, float] = (0.0, 0.0)) -> None:
    routes, weights = list(mix), list(mix.values())
    logged_in = time.perf_counter()
    while time.perf_counter() < until:
        if pause[1]:
            await asyncio.sleep(random.uniform(*pause))
            if time.perf_counter() >= until:
                break
        route = random.choices(routes, weights)[0]
        if time.perf_counter() - logged_in > LOGIN_EVERY_SECONDS:
            route, logged_in = LOGIN, time.perf_counter()
        started = time.perf_counter()
        try:
            await prepare(user, route)
        except httpx.HTTPError as error:
            # The route's request cannot be made without it: the route's error, with its status if any.
            response = error.response if isinstance(error, httpx.HTTPStatusError) else None
            results.record(route, started, response, f"{type(error).__name__}: {error}")
            continue
        await send(user, route, request_for(user, route), results)


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]



# What the bench's own mesh runs with besides mesh_env's addresses and data directory, stated in its output.
BENCH_SETTINGS = {"SAGEMESH_RATE_LIMIT_PER_TENANT": "100000/second", "SAGEMESH_TRUSTED_PROXY_HOPS": "1"}


def report(results: Results, users: int, seconds: float, pause: tuple[float, float] = (0.0, 0.0),
           url: str | None = None) -> str:
    """The table; Refused when any request failed (a 429 is the limits at work, not a failure)."""
    if results.errors:
        raise Refused("no figures: requests failed: " + "; ".join(
            f"{route}: {len(problems)}, e.g. {problems[0]}" for route, problems in results.errors.items()))
    pausing = f"pausing {pause[0]:g} to {pause[1]:g} s between requests" if pause[1] else "without pause"
    command = f"python -m bench.load --users {users} --seconds {seconds:.0f}" + (
        f" --pause {pause[0]:g} {pause[1]:g}" if pause[1] else "")
    settings = ", ".join(f"{key}={value}" for key, value in BENCH_SETTINGS.items())
    mesh = (f"the mesh at {url}, as it was configured" if url else
            f"the mesh's defaults but for {settings} (each user from an address of its own, all in one tenant)")
    lines = [f"Mixed REST traffic: {users} users {pausing} for {seconds:.0f} s through the gateway "
             f"(`{command}`); {mesh}.", "",
             "| route | requests | per second | p50 ms | p95 ms | p99 ms | errors | rate-limited (429) |",
             "|---|---|---|---|---|---|---|---|"]
    everything: list[float] = []
    for route in [*MIX, LOGIN]:
        values = results.latencies.get(route, [])
        if not values:
            continue
        everything += values
        lines.append(f"| {route} | {len(values)} | {len(values) / seconds:.1f} | {percentile(values, 50) * 1000:.0f} | "
                     f"{percentile(values, 95) * 1000:.0f} | {percentile(values, 99) * 1000:.0f} | "
                     f"{len(results.errors.get(route, []))} | {results.limited.get(route, 0)} |")
    errors = sum(len(e) for e in results.errors.values())
    lines.append(f"| **all** | {len(everything)} | {len(everything) / seconds:.1f} | "
                 f"{percentile(everything, 50) * 1000:.0f} | {percentile(everything, 95) * 1000:.0f} | "
                 f"{percentile(everything, 99) * 1000:.0f} | {errors} | {sum(results.limited.values())} |")
    return "\n".join(lines) + "\n"


def load_client(url: str, users: int) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=users * 2, max_keepalive_connections=users * 2)
    return httpx.AsyncClient(base_url=url, timeout=60, limits=limits)


async def set_up(client: httpx.AsyncClient, users: int) -> list[User]:
    """Signs the users up into one knowledge base holding the policy (indexed), and warms the
    cache and the models once, outside any measured time."""
    first = await sign_up(client, None, 0)
    for i, content in enumerate([POLICY, POLICY.replace(b"45 euros", b"45 EUR (2025 edition)")]):
        document = await client.send(upload_request(first, content, f"policy-{i}.md"))
        document.raise_for_status()
        async with client.stream("GET", f"/api/v1/knowledge/documents/{document.json()['documentId']}"
                                        "/status:watch", headers=first.headers) as watch:
            _ = [line async for line in watch.aiter_lines()]
    everyone = [first, *await asyncio.gather(*(sign_up(client, first.kb_id, n) for n in range(1, users)))]
    await prepare(first, "POST messages (cached question)")
    (await one_request(first, "POST messages (cached question)")).raise_for_status()
    return everyone


async def run(url: str, users: int, seconds: float, mix: dict[str, int], pause: tuple[float, float],
              external: bool = False) -> str:
    async with load_client(url, users) as client:
        everyone = await set_up(client, users)
        results = Results()
        until = time.perf_counter() + seconds
        await asyncio.gather(*(drive(user, until, results, mix, pause=pause) for user in everyone))
    return report(results, users, seconds, pause, url if external else None)


def load_env(data_dir: Path, **extra: str) -> dict[str, str]:
    """The mesh's environment under load: the rate limits as shipped, but each user comes from
    an address of its own (X-Forwarded-For, one trusted hop) and the tenant's limit is raised."""
    return mesh_env(data_dir, SAGEMESH_LOG_LEVEL="WARNING", **BENCH_SETTINGS, **extra)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--url", help="a running mesh's gateway; by default the bench starts its own")
    parser.add_argument("--pause", nargs=2, type=float, default=(0.0, 0.0), metavar=("MIN", "MAX"),
                        help="each user waits a random MIN to MAX seconds before each request (default: no pause)")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--only", nargs="+", metavar="ROUTE", choices=list(MIX),
                        help="send only these routes of the mix (to see one path's cost without the others)")
    options = parser.parse_args()
    mix = {route: weight for route, weight in MIX.items() if not options.only or route in options.only}
    try:
        if options.url:
            table = asyncio.run(run(options.url, options.users, options.seconds, mix, tuple(options.pause),
                                    external=True))
        else:
            with tempfile.TemporaryDirectory() as data_dir, running_mesh(load_env(Path(data_dir))) as mesh:
                table = asyncio.run(run(mesh.url, options.users, options.seconds, mix, tuple(options.pause)))
    except Refused as refused:
        sys.exit(str(refused))
    print(table)
    if options.out:
        options.out.write_text(table)


if __name__ == "__main__":
    main()
