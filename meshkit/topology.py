"""The services of the mesh: names, gRPC service names and default ports."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ServiceInfo:
    name: str
    grpc_service: str
    default_port: int
    default_metrics_port: int


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


def metrics_port_of(process: str, configured: int | None = None) -> int:
    """Where a process ("gateway", "rag_engine", ...) serves /metrics: as configured, else its default."""
    if configured is not None:
        return configured
    return GATEWAY_METRICS_PORT if process == "gateway" else SERVICES[process].default_metrics_port
