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
    # Largest upload (multipart or streamed) accepted: every byte of its body counts.
    max_upload_bytes: int = 100 * 1024 * 1024
    # Form fields of a multipart upload: the metadata has a handful, plus one per label
    # (`metadata[team]`); their size and number would otherwise be bounded by nothing
    # but max_upload_bytes, all of it held at once.
    max_upload_fields: int = 64
    max_upload_field_bytes: int = 64 * 1024
    # An upload that sends nothing, or a streamed reply whose client reads nothing, for this
    # long is ended (nginx's client_body_timeout and send_timeout are 60 s too): until then it
    # holds one of its caller's streams and a backend call.
    stream_idle_timeout_seconds: float = 60.0
    # Streams (answers and watches streamed back, uploads streamed in) one caller may have open
    # at once, per user with a valid token, else per address; 0 turns the limit off. The CLI's
    # upload holds up to 16 watches and 4 uploads at once by default; 32 leaves room for that
    # beside a chat, while one caller alone cannot fill a server's 256 concurrent calls.
    max_streams_per_caller: int = 32
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
