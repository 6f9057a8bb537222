"""Settings read from the environment (prefix SAGEMESH_) or a `.env` file.

Every process reads MeshSettings; a service subclasses it for its own
settings. Defaults suit a local run on one machine; production overrides them
with environment variables (see the README's settings table).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SecretsSettingsSource, SettingsConfigDict
from sqlalchemy.engine import make_url

from meshkit.channel_policy import ChannelPolicy, LoadBalancingPolicy
from meshkit.topology import SERVICES

ENV_PREFIX = "SAGEMESH_"
SECRETS_DIR_VARIABLE = f"{ENV_PREFIX}SECRETS_DIR"
_CLIENT = ChannelPolicy()


class SharedDatabaseRequired(RuntimeError):
    """A process told to share its database was left with a SQLite file of its own."""


class MeshSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_file=".env", extra="ignore", frozen=True
    )

    environment: str = "local"
    # A directory of files named like the variables (SAGEMESH_DATABASE_URL, ...),
    # each holding one setting: how Kubernetes mounts a Secret, so that secrets
    # are not in the environment, where `kubectl describe`, crash dumps and
    # child processes see them. The environment wins over a file.
    secrets_dir: Path | None = None
    # Off for a laptop, where a SQLite file per service is the point; on in
    # production, where a pod's SQLite file would be lost with the pod and
    # each replica would have a database of its own.
    require_shared_database: bool = False
    # This process's version as traces report it (a canary's differs from
    # stable); defaults to the installed package's version.
    service_version: str | None = None
    # Where this process serves Prometheus metrics (/metrics); unset uses the
    # process's default (gateway 9090, services 9091-9095), 0 turns it off.
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    log_level: str = "INFO"
    log_format: Literal["json", "text"] = "json"
    # Local state (SQLite files, signing keys, uploads) when no backend URL is set.
    data_dir: Path = Path("var")

    # Where each service is reached (host:port, or any gRPC target such as
    # dns:///identity.sagemesh.svc.cluster.local:50051).
    identity_addr: str = SERVICES["identity"].default_address
    conversation_addr: str = SERVICES["conversation"].default_address
    knowledge_addr: str = SERVICES["knowledge"].default_address
    rag_engine_addr: str = SERVICES["rag_engine"].default_address
    agent_addr: str = SERVICES["agent"].default_address

    # gRPC server.
    listen_host: str = "127.0.0.1"
    # 0 picks a free port; unset uses the service's default port.
    listen_port: int | None = None
    grace_period_seconds: float = 10.0
    # Message size limit, both ways, of servers and clients.
    max_message_bytes: int = _CLIENT.max_message_bytes
    # Recycle connections now and then so clients rebalance across new pods.
    max_connection_age_seconds: float = 300.0
    health_check_interval_seconds: float = 5.0
    # Calls served at once; beyond it a call is refused at once with
    # RESOURCE_EXHAUSTED (the gateway's 429) rather than queued without bound.
    max_concurrent_rpcs: int = 256

    # gRPC clients: the mesh's ChannelPolicy (see meshkit.channel_policy for
    # what each means), its defaults overridable here; keepalive serves the
    # server too.
    default_deadline_seconds: float = _CLIENT.default_deadline_seconds
    keepalive_time_seconds: float = _CLIENT.keepalive_time_seconds
    keepalive_timeout_seconds: float = _CLIENT.keepalive_timeout_seconds
    retry_max_attempts: int = _CLIENT.retry_max_attempts
    retry_initial_backoff_seconds: float = _CLIENT.retry_initial_backoff_seconds
    retry_max_backoff_seconds: float = _CLIENT.retry_max_backoff_seconds
    retry_throttling_max_tokens: int = _CLIENT.retry_throttling_max_tokens
    retry_throttling_token_ratio: float = _CLIENT.retry_throttling_token_ratio
    reconnect_max_backoff_seconds: float = _CLIENT.reconnect_max_backoff_seconds
    load_balancing_policy: LoadBalancingPolicy = _CLIENT.load_balancing_policy

    # Access tokens: issued by identity, verified by every service.
    jwt_issuer: str = "sagemesh-identity"
    jwt_audience: str = "sagemesh"
    # Directory of public keys (<kid>.pub.pem); identity also keeps its
    # private keys here. Defaults to <data_dir>/jwt.
    jwt_keys_dir: Path | None = None
    # How often a service asks identity which sessions ended (logout, a reused
    # refresh token): a logged-out session's access token is refused by every
    # service within about this long, though its expiry is minutes away.
    revocation_poll_seconds: float = 1.0

    # Backends. The bare names are the conventional ones and are accepted too.
    database_url: str | None = Field(
        default=None, validation_alias=AliasChoices("SAGEMESH_DATABASE_URL", "DATABASE_URL")
    )
    redis_url: str | None = Field(
        default=None, validation_alias=AliasChoices("SAGEMESH_REDIS_URL", "REDIS_URL")
    )

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The directory is itself a setting, so it is read before the others.
        secrets_dir = os.environ.get(SECRETS_DIR_VARIABLE)
        if secrets_dir:
            file_secret_settings = SecretsSettingsSource(settings_cls, secrets_dir=secrets_dir)
        return init_settings, env_settings, dotenv_settings, file_secret_settings

    @property
    def keys_dir(self) -> Path:
        return self.jwt_keys_dir or self.data_dir / "jwt"

    @property
    def channel_policy(self) -> ChannelPolicy:
        """The client settings above, as the policy channels are built from."""
        return ChannelPolicy(**{field.name: getattr(self, field.name) for field in dataclasses.fields(ChannelPolicy)})

    def address_of(self, service: str) -> str:
        return getattr(self, f"{service}_addr")

    def database_url_for(self, service: str) -> str:
        """The configured database, or a SQLite file of the service's own."""
        url = self.database_url or f"sqlite:///{self.data_dir / service}.db"
        if self.require_shared_database and make_url(url).get_backend_name() == "sqlite":
            raise SharedDatabaseRequired(
                f"{service} refuses to start on SQLite ({url}) because {ENV_PREFIX}REQUIRE_SHARED_DATABASE is on: "
                f"a pod's SQLite file is lost with the pod and no other replica sees it; "
                f"set {ENV_PREFIX}DATABASE_URL to the shared PostgreSQL database")
        return url
