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
