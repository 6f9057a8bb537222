"""What the gateway costs: one unary RPC called directly over gRPC and through
the gateway, at concurrency 1 and 64, in one run.

    .venv/bin/python -m bench.gateway_overhead [--seconds 10] [--out bench/results/gateway.md]

Identity and the gateway run as their own processes, as in production; the
load comes from this process (a grpc.aio client, and an aiohttp client for
HTTP). The RPC is identity's GetMe with a valid token: token verification and
one database read on every call. Goals (issue 3): through the gateway at most
2x the direct p50 at concurrency 1, and at least half the direct throughput at
concurrency 64.

The gateway runs with its rate limits off (BENCH_SETTINGS, stated in the
output): they would answer most of this one caller's requests with 429, and
what is measured is the cost of transcoding. No figure is printed, and the
command fails, when any request failed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import date
from pathlib import Path

import aiohttp

from bench import machine
from bench.refused import Refused

from meshkit.channels import create_channel
from meshkit.settings import MeshSettings
from sagemesh.identity.v1 import identity_pb2 as pb
from sagemesh.identity.v1 import identity_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "correct horse battery staple"
# What the bench sets besides addresses and the data directory, printed with its figures.
BENCH_SETTINGS = {"SAGEMESH_RATE_LIMITS": "false", "SAGEMESH_LOG_LEVEL": "WARNING"}



def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def wait_for(url: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            try:
                async with session.get(url) as reply:
                    if reply.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
    raise RuntimeError(f"{url} not ready")


async def measure(call: Callable[[], Awaitable[None]], concurrency: int, seconds: float) -> dict:
    latencies: list[float] = []
    errors: list[str] = []
    stop_at = time.monotonic() + seconds

    async def worker() -> None:
        while time.monotonic() < stop_at:
            started = time.perf_counter()
            try:
                await call()
            except Exception as error:  # counted, and the first one said, by the report
                errors.append(f"{type(error).__name__}: {error}"[:300])
                continue
            latencies.append(time.perf_counter() - started)

    began = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.monotonic() - began
    latencies.sort()
    return {
        "p50_ms": statistics.median(latencies) * 1000 if latencies else 0.0,
        "p99_ms": latencies[max(int(len(latencies) * 0.99) - 1, 0)] * 1000 if latencies else 0.0,
        "rps": len(latencies) / elapsed,
        "errors": len(errors),
        "first_error": errors[0] if errors else "",
        "calls": len(latencies),
    }


async def run(seconds: float) -> list[tuple[int, dict, dict]]:
    grpc_port, http_port = free_port(), free_port()
    data_dir = tempfile.mkdtemp(prefix="sagemesh-bench-")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SAGEMESH_")},
        "SAGEMESH_DATA_DIR": data_dir,
        "SAGEMESH_IDENTITY_ADDR": f"127.0.0.1:{grpc_port}",
        "SAGEMESH_LISTEN_PORT": str(grpc_port),
        "SAGEMESH_HTTP_PORT": str(http_port),
        "SAGEMESH_GATEWAY_SERVICES": '["identity"]',
        **BENCH_SETTINGS,
    }
    processes = [
        subprocess.Popen([sys.executable, "-m", module], cwd=ROOT, env=env)
        for module in ("services.identity.server", "gateway.server")
    ]
    try:
        base = f"http://127.0.0.1:{http_port}"
        await wait_for(f"{base}/api/v1/health")  # every backend serving; /readyz is the gateway alone
        settings = MeshSettings(_env_file=None)
        async with create_channel(f"127.0.0.1:{grpc_port}", settings) as channel:
            stub = identity_pb2_grpc.IdentityServiceStub(channel)
            await stub.Register(pb.RegisterRequest(email="bench@example.com", password=PASSWORD))
            login = await stub.Login(pb.LoginRequest(email="bench@example.com", password=PASSWORD))
            metadata = (("authorization", f"Bearer {login.access_token}"),)
            headers = {"Authorization": f"Bearer {login.access_token}"}
            connector = aiohttp.TCPConnector(limit=0)
            async with aiohttp.ClientSession(base_url=base, connector=connector) as session:

                async def direct() -> None:
                    await stub.GetMe(pb.GetMeRequest(), metadata=metadata)

                async def through_gateway() -> None:
                    async with session.get("/api/v1/users/me", headers=headers) as reply:
                        await reply.read()
                        if reply.status != 200:
                            raise RuntimeError(f"HTTP {reply.status}: {(await reply.text())[:200]}")

                # Warm both paths (connections, caches) before measuring.
                await measure(direct, 8, 1)
                await measure(through_gateway, 8, 1)
                results = []
                for concurrency in (1, 64):
                    results.append(
                        (concurrency, await measure(direct, concurrency, seconds),
                         await measure(through_gateway, concurrency, seconds))
                    )
                return results
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            process.wait(timeout=20)


def report(results, seconds: float) -> str:
    failed = [(concurrency, name, row) for concurrency, direct, gateway in results
              for name, row in (("direct gRPC", direct), ("gateway", gateway)) if row["errors"]]
    if failed:
        raise Refused("no figures: requests failed: " + "; ".join(
            f"{row['errors']} of {row['errors'] + row['calls']} at concurrency {concurrency} ({name}), "
            f"the first {row['first_error']}" for concurrency, name, row in failed))
    settings = ", ".join(f"{key}={value}" for key, value in BENCH_SETTINGS.items())
    lines = [
        f"# Gateway overhead ({date.today().isoformat()})",
        "",
        f"identity GetMe (token check + one SQLite read), {seconds:.0f} s per cell, on "
        f"{machine.describe()}; identity, gateway and load generator each in its own process on "
        f"this machine. Settings: the services' defaults but for {settings} (the rate limits "
        "would answer this one caller with 429: the cost of transcoding is what is measured).",
        "",
        "| concurrency | path | p50 ms | p99 ms | req/s | errors |",
        "|---|---|---|---|---|---|",
    ]
    for concurrency, direct, gateway in results:
        for name, row in (("direct gRPC", direct), ("gateway", gateway)):
            lines.append(
                f"| {concurrency} | {name} | {row['p50_ms']:.2f} | {row['p99_ms']:.2f} "
                f"| {row['rps']:.0f} | {row['errors']} |"
            )
    lines.append("")
    c1 = next(r for r in results if r[0] == 1)
    c64 = next(r for r in results if r[0] == 64)
    latency_ratio = c1[2]["p50_ms"] / c1[1]["p50_ms"]
    throughput_ratio = c64[2]["rps"] / c64[1]["rps"]
    lines.append(f"- p50 through the gateway / direct, concurrency 1: **{latency_ratio:.2f}x** (goal <= 2x)")
    lines.append(f"- throughput through the gateway / direct, concurrency 64: **{throughput_ratio:.2f}** (goal >= 0.5)")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--out", type=Path, help="also write the table to this file")
    options = parser.parse_args()
    try:
        text = report(asyncio.run(run(options.seconds)), options.seconds)
    except Refused as refused:
        sys.exit(str(refused))
    print(text)
    if options.out:
        options.out.write_text(text)


if __name__ == "__main__":
    main()
