from __future__ import annotations

from pydantic import field_validator

from gateway.client_metadata import may_forward
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
    # A call waits this long for its backend's connection to be made, then is 503: a connection
    # here takes milliseconds, and a backend that accepts connections and never answers must not
    # hold each of its requests for a whole deadline.
    backend_connect_timeout_seconds: float = 1.0
    # Calls one backend may have waiting for its answer at once; beyond it they are 503 at once.
    # A server serves max_concurrent_rpcs (256) at once: more waiting here is a backend not answering.
    max_calls_waiting_per_backend: int = MeshSettings.model_fields["max_concurrent_rpcs"].default
    # Query strings are read before authentication. 8 KiB is the common proxy limit on a request
    # line (nginx's large_client_header_buffers); the largest query of a route is a few fields
    # and at most 20 knowledge base ids (meshkit.ids), well inside 100 parameters; field paths
    # are a few names deep, and a map key a label.
    max_query_bytes: int = 8 * 1024
    max_query_parameters: int = 100
    max_query_name_length: int = 256
    max_query_name_depth: int = 8
    # Grpc-Metadata-<key> headers passed on to services; any other key is 400. grpc-gateway users
    # pass correlation ids and client versions for logs; no service reads more from a client.
    # Never authorization, x-forwarded-for, x-envoy-*, grpc-* or the mesh's own keys.
    forwarded_metadata: list[str] = ["x-correlation-id", "x-client-version"]
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
    registration_limit_per_address: str = "10/minute;100/hour"
    rate_limits: bool = True
    # Proxies in front of the gateway that append to X-Forwarded-For (an Istio
    # ingress gateway is one); 0 takes the peer's address.
    trusted_proxy_hops: int = 0

    @field_validator("forwarded_metadata")
    @classmethod
    def _forwardable(cls, keys: list[str]) -> list[str]:
        if refused := [key for key in keys if not may_forward(key)]:
            raise ValueError(f"these metadata keys are never forwarded from clients: {', '.join(refused)}")
        return keys
