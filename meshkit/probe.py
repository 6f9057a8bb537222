"""One health check of a running sagemesh process, as a command:

    python -m meshkit.probe [--grpc ADDRESS | --http URL] [--service NAME] [--timeout SECONDS]

It exists for the container image's Docker HEALTHCHECK, and for people at a shell. Kubernetes does
not use it: its native gRPC and HTTP probes ask the same endpoints without starting a Python process.

With no target given it probes what the container runs: grpc.health.v1 at
127.0.0.1:$SAGEMESH_LISTEN_PORT when that is set; else, when the container's main process runs
`services.<name>.server`, that service's default port; else the gateway's
http://127.0.0.1:${SAGEMESH_HTTP_PORT:-8080}/healthz. Exits 0 on SERVING or HTTP 200 and 1
otherwise, printing one line that says what it found.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import urllib.error
import urllib.request
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from meshkit.health import SERVING
from meshkit.topology import SERVICES

DEFAULT_HTTP_PORT = 8080
DEFAULT_TIMEOUT_SECONDS = 3.0
SERVICE_MODULE = re.compile(r"services\.(\w+)\.server")


def service_of_command(argv: list[str]) -> str | None:
    """The mesh service a command line runs (`python -m services.identity.server`), if any."""
    for arg in argv:
        match = SERVICE_MODULE.fullmatch(arg)
        if match and match.group(1) in SERVICES:
            return match.group(1)
    return None


def main_process_command() -> list[str]:
    # PID 1 is the container's main process (or an init such as tini, whose argv holds it).
    try:
        return Path("/proc/1/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def default_target(environ: dict[str, str], main_command: list[str]) -> tuple[str, str]:
    """("grpc", address) or ("http", url): what to probe when no target is given."""
    if environ.get("SAGEMESH_LISTEN_PORT"):
        return "grpc", f"127.0.0.1:{environ['SAGEMESH_LISTEN_PORT']}"
    service = service_of_command(main_command)
    if service:
        return "grpc", f"127.0.0.1:{SERVICES[service].default_port}"
    return "http", f"http://127.0.0.1:{environ.get('SAGEMESH_HTTP_PORT') or DEFAULT_HTTP_PORT}/healthz"


def probe_grpc(address: str, service: str, timeout: float) -> tuple[bool, str]:
    # No proxies: an https_proxy in the container's environment must not carry a loopback probe away.
    with grpc.insecure_channel(address, options=[("grpc.enable_http_proxy", 0)]) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout
            )
        except grpc.RpcError as error:
            return False, f"{error.code().name}: {error.details()}"
    return reply.status == SERVING, health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


def probe_http(url: str, timeout: float) -> tuple[bool, str]:
    # No proxies here either.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout) as response:
            status = response.status
    except urllib.error.HTTPError as error:
        status = error.code
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        return False, f"unreachable: {reason}"
    return status == 200, f"HTTP {status}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Checks the health of a sagemesh process once.")
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--grpc", metavar="ADDRESS", help="grpc.health.v1 at this host:port")
    target.add_argument("--http", metavar="URL", help="GET this URL; healthy means 200")
    parser.add_argument("--service", default="", metavar="NAME",
                        help='gRPC service whose health to ask for; "" (default) is the whole server')
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_SECONDS, metavar="SECONDS")
    options = parser.parse_args(argv)

    if options.grpc:
        kind, where = "grpc", options.grpc
    elif options.http:
        kind, where = "http", options.http
    else:
        kind, where = default_target(dict(os.environ), main_process_command())
    label = f"grpc {where} service {options.service!r}" if kind == "grpc" else f"http {where}"
    try:
        if kind == "grpc":
            healthy, found = probe_grpc(where, options.service, options.timeout)
        else:
            healthy, found = probe_http(where, options.timeout)
    except Exception as error:  # a malformed target, say: still one line, never a traceback
        healthy, found = False, f"{type(error).__name__}: {error}"
    print(" ".join(f"{label}: {found}".split())[:300])
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
