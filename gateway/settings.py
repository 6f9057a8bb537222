from __future__ import annotations

from meshkit.settings import MeshSettings
from meshkit.topology import SERVICES


class GatewaySettings(MeshSettings):
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    # Services whose routes are exposed and whose health /readyz requires.
    gateway_services: list[str] = list(SERVICES)
    # Largest JSON body accepted; larger ones get 413.
    max_body_bytes: int = 1024 * 1024
    # Largest upload (multipart or streamed) accepted.
    max_upload_bytes: int = 100 * 1024 * 1024
    readiness_timeout_seconds: float = 1.0
    # Deadline of a streaming call (an answer or a status watch streamed back, an upload streamed
    # in) whose client sends no Grpc-Timeout: unary calls get the mesh's default_deadline_seconds,
    # which would cut a slow answer, a long watch or a large upload short.
    stream_deadline_seconds: float = 300.0
    # Requests per caller, as "20/second;600/minute" ("" turns one off); counted
    # in Redis when REDIS_URL is set, so that every replica shares them.
    rate_limit_per_user: str = "20/second;600/minute"
    rate_limit_per_tenant: str = "200/second"
    # Requests without a valid token, per client address.
    rate_limit_per_address: str = "20/second"
    login_limit_per_account: str = "10/minute"
    login_limit_per_address: str = "30/minute"
    rate_limits: bool = True
    # Proxies in front of the gateway that append to X-Forwarded-For (an Istio
    # ingress gateway is one); 0 takes the peer's address.
    trusted_proxy_hops: int = 0
