"""The services of the mesh: names, gRPC service names and default ports, and
the RPCs that need no user token (public, internal and infrastructure ones)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ServiceInfo:
    name: str
    grpc_service: str
    default_port: int
    default_metrics_port: int

    @property
    def default_address(self) -> str:
        """Where it is reached when nothing says otherwise: on this machine, as `make run` serves it."""
        return f"127.0.0.1:{self.default_port}"


SERVICES: dict[str, ServiceInfo] = {
    info.name: info
    for info in (
        ServiceInfo("identity", "sagemesh.identity.v1.IdentityService", 50051, 9091),
        ServiceInfo("conversation", "sagemesh.conversation.v1.ConversationService", 50052, 9092),
        ServiceInfo("knowledge", "sagemesh.knowledge.v1.KnowledgeService", 50053, 9093),
        ServiceInfo("rag_engine", "sagemesh.rag_engine.v1.RagEngineService", 50054, 9094),
        ServiceInfo("agent", "sagemesh.agent.v1.AgentService", 50055, 9095),
    )
}

GATEWAY_METRICS_PORT = 9090
# The standard services every server has: probed every few seconds, no one's request.
INFRASTRUCTURE_METHOD_PREFIXES = ("/grpc.health.v1.", "/grpc.reflection.")
# RPCs a caller may make without an access token.
PUBLIC_METHODS: frozenset[str] = frozenset(
    {
        "/sagemesh.identity.v1.IdentityService/Register",
        "/sagemesh.identity.v1.IdentityService/Login",
        "/sagemesh.identity.v1.IdentityService/RefreshToken",
        "/sagemesh.identity.v1.IdentityService/Logout",
        "/grpc.health.v1.Health/Check",
        "/grpc.health.v1.Health/Watch",
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    }
)
# Service-to-service RPCs that act for a tenant named in the request rather
# than for a user. Who may call them is enforced by the mesh (Istio mTLS and
# AuthorizationPolicy), not by a user token.
INTERNAL_METHODS: frozenset[str] = frozenset(
    {
        "/sagemesh.identity.v1.IdentityService/ValidateToken",
        "/sagemesh.identity.v1.IdentityService/ListRevokedSessions",
        "/sagemesh.rag_engine.v1.RagEngineService/IndexChunks",
        "/sagemesh.rag_engine.v1.RagEngineService/DeleteDocumentChunks",
        "/sagemesh.rag_engine.v1.RagEngineService/DeleteKnowledgeBaseChunks",
    }
)


def metrics_port_of(process: str, configured: int | None = None) -> int:
    """Where a process ("gateway", "rag_engine", ...) serves /metrics: as configured, else its default."""
    if configured is not None:
        return configured
    return GATEWAY_METRICS_PORT if process == "gateway" else SERVICES[process].default_metrics_port
