"""Runs the whole mesh on this machine in the foreground: `make run`.

Each service under services/ runs as its own process on its default port,
and the gateway in front of them on http://127.0.0.1:8080 (override
with SAGEMESH_<SERVICE>_ADDR, e.g. SAGEMESH_IDENTITY_ADDR=127.0.0.1:6001).
Each process serves its Prometheus metrics on its own port: the gateway on
9090, the services on 9091-9095 (override with SAGEMESH_<NAME>_METRICS_PORT,
e.g. SAGEMESH_GATEWAY_METRICS_PORT=9190; 0 turns one off).
Ctrl-C (or SIGTERM) asks every service to drain and stop; if one exits on
its own, the rest are stopped too. A process still running
STOP_TIMEOUT_SECONDS after its grace period is killed and named.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import urllib.request
from pathlib import Path

import grpc

from gateway.app import HEALTH_PATH
from gateway.settings import GatewaySettings
from meshkit import health
from meshkit.topology import SERVICES, metrics_port_of

ROOT = Path(__file__).resolve().parent.parent
STARTUP_TIMEOUT_SECONDS = 60
# Beyond each process's grace period, for its shutdown hooks; Kubernetes allows 35 s in all
# (terminationGracePeriodSeconds), the 10 s default grace included.
STOP_TIMEOUT_SECONDS = 25


def available_services() -> list[str]:
    return [name for name in SERVICES if (ROOT / "services" / name / "server.py").exists()]


async def wait_until_serving(address: str, process: asyncio.subprocess.Process) -> bool:
    async with grpc.aio.insecure_channel(address) as channel:
        return await health.wait_until_serving(channel, lambda: process.returncode is None,
                                               STARTUP_TIMEOUT_SECONDS)


async def wait_until_ready(url: str, process: asyncio.subprocess.Process) -> bool:
    def ready() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=1) as reply:
                return reply.status == 200
        except OSError:
            return False

    for _ in range(STARTUP_TIMEOUT_SECONDS * 4):
        if process.returncode is not None:
            return False
        if await asyncio.to_thread(ready):
            return True
        await asyncio.sleep(0.25)
    return False


def metrics_port(name: str) -> int:
    configured = os.environ.get(f"SAGEMESH_{name.upper()}_METRICS_PORT")
    return metrics_port_of(name, int(configured) if configured else None)


def process_env(name: str, **settings: str) -> dict[str, str]:
    # Each process names itself in traces.
    inherited = {k: v for k, v in os.environ.items() if k != "OTEL_SERVICE_NAME"}
    return {**inherited, "SAGEMESH_METRICS_PORT": str(metrics_port(name)), **settings}


def metrics_url(name: str, settings: GatewaySettings) -> str:
    port = metrics_port(name)
    return f"  metrics http://{settings.metrics_host}:{port}/metrics" if port else ""


async def stop_all(processes: dict[str, asyncio.subprocess.Process], timeout: float) -> list[int]:
    """SIGTERM to every process still running; SIGKILL to those still running `timeout` s later."""
    for process in processes.values():
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)

    async def stopped(name: str, process: asyncio.subprocess.Process) -> int:
        try:
            return await asyncio.wait_for(process.wait(), timeout)
        except TimeoutError:
            print(f"{name} still running {timeout:g} s after SIGTERM: killed", file=sys.stderr, flush=True)
            process.kill()
            await process.wait()
            return -signal.SIGKILL

    return list(await asyncio.gather(*(stopped(name, p) for name, p in processes.items())))


async def main() -> int:
    settings = GatewaySettings()
    names = available_services()
    processes: dict[str, asyncio.subprocess.Process] = {}
    for name in names:
        host, _, port = settings.address_of(name).rpartition(":")
        env = process_env(name, SAGEMESH_LISTEN_HOST=host, SAGEMESH_LISTEN_PORT=port)
        processes[name] = await asyncio.create_subprocess_exec(
            sys.executable, "-m", f"services.{name}.server", cwd=ROOT, env=env
        )
    # The gateway exposes the services that run, and is ready when they all serve.
    gateway_env = process_env("gateway", SAGEMESH_GATEWAY_SERVICES=json.dumps(names))
    processes["gateway"] = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.server", cwd=ROOT, env=gateway_env
    )
    gateway_url = f"http://{settings.http_host}:{settings.http_port}"

    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)

    ready = await asyncio.gather(
        *(wait_until_serving(settings.address_of(n), processes[n]) for n in names),
        # 200 when every backend serves (/readyz is the gateway alone).
        wait_until_ready(f"{gateway_url}{HEALTH_PATH}", processes["gateway"]),
    )
    if all(ready):
        print("\nsagemesh is running:", flush=True)
        for name in names:
            print(f"  {name:<13} grpc  {settings.address_of(name):<22}{metrics_url(name, settings)}", flush=True)
        print(f"  {'gateway':<13} http  {gateway_url}  (API docs: {gateway_url}/docs){metrics_url('gateway', settings)}",
              flush=True)
        if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
            print(f"  traces to {os.environ['OTEL_EXPORTER_OTLP_ENDPOINT']}", flush=True)
        print("Ctrl-C stops it.\n", flush=True)
        exits = [asyncio.create_task(p.wait()) for p in processes.values()]
        stopper = asyncio.create_task(stopping.wait())
        await asyncio.wait([stopper, *exits], return_when=asyncio.FIRST_COMPLETED)
    else:
        failed = [n for n, ok in zip([*names, "gateway"], ready) if not ok]
        print(f"not serving after start-up: {', '.join(failed)}", file=sys.stderr, flush=True)

    codes = await stop_all(processes, settings.grace_period_seconds + STOP_TIMEOUT_SECONDS)
    # uvicorn re-raises the SIGTERM it handled, after its graceful shutdown.
    clean = all(code in (0, -signal.SIGTERM) for code in codes)
    return 0 if all(ready) and stopping.is_set() and clean else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
