"""The agent service: `python -m services.agent.server`."""

from __future__ import annotations

import asyncio
from functools import partial
from pathlib import Path

from meshkit import db, server
from meshkit.channels import channel_to
from meshkit.knowledge_bases_grpc import GrpcKnowledgeBases
from meshkit.sandbox import Sandbox, SandboxLimits
from meshkit.topology import SERVICES
from sagemesh.agent.v1 import agent_pb2_grpc
from services.agent import metrics
from services.agent.agents import Agents, AgentsConfig
from services.agent.executor import Executor, RulesPlanner
from services.agent.reasoner_openai import ChatReasoner
from services.agent.retriever_grpc import GrpcRetriever
from services.agent.servicer import AgentServicer
from services.agent.settings import AgentSettings
from services.agent.store_sql import SqlRunStore
from services.agent.tools import calculator, current_time
from services.agent.tools.breaker import CircuitBreaker
from services.agent.tools.calculator import calculator_tool
from services.agent.tools.http_get import http_get_tool
from services.agent.tools.knowledge_base import knowledge_base_tool
from services.agent.tools.registry import ToolRegistry

MIGRATIONS = Path(__file__).parent / "migrations"


def tool_sandbox(settings: AgentSettings) -> Sandbox:
    """Where the registry runs the tools that compute."""
    return Sandbox("tool sandbox", SandboxLimits(memory_bytes=settings.agent_tool_sandbox_memory_mib * 2**20,
                                                 cpu_seconds=settings.agent_tool_sandbox_cpu_seconds),
                   workers=settings.agent_tool_sandbox_workers, preload=(calculator.__name__,))


async def build(settings: AgentSettings) -> server.ServiceApp:
    engine = db.create_engine(settings.database_url_for("agent"))
    await db.migrate(engine, MIGRATIONS, version_table="alembic_version_agent")
    rag_engine = channel_to("rag_engine", settings)
    knowledge = channel_to("knowledge", settings)
    sandbox = tool_sandbox(settings)
    # Started before the service serves: the calculator's 2 s timeout would otherwise include a
    # worker's start on the first call, which takes longer than that on a busy machine.
    await sandbox.start()
    registry = ToolRegistry(
        [calculator_tool(settings.agent_calculator_max_digits), current_time.TOOL,
         knowledge_base_tool(GrpcRetriever(rag_engine)), http_get_tool(
             settings.agent_http_allowed_hosts.split(","),
             [int(port) for port in settings.agent_http_allowed_ports.split(",") if port.strip()],
             settings.agent_http_allowed_networks.split(","))],
        breaker=partial(CircuitBreaker, settings.tool_breaker_threshold, settings.tool_breaker_cool_down_seconds),
        sandbox=sandbox,
    )
    metrics.BREAKERS.watch(registry)
    reasoner = None
    if settings.agent_reasoner_url:
        models = [m.strip() for m in settings.agent_reasoner_models.split(",") if m.strip()]
        reasoner = ChatReasoner(settings.agent_reasoner_url, models, settings.agent_reasoner_api_key,
                                settings.agent_reasoner_timeout_seconds, settings.agent_reasoner_prices)
    config = AgentsConfig(
        default_max_steps=settings.agent_default_max_steps, max_steps_limit=settings.agent_max_steps_limit,
        deadline_seconds=settings.agent_deadline_seconds, max_replans=settings.agent_max_replans,
    )
    agents = Agents(registry, Executor(registry, RulesPlanner()), SqlRunStore(engine), GrpcKnowledgeBases(knowledge),
                    config, reasoner)
    return server.ServiceApp(
        info=SERVICES["agent"],
        register=partial(agent_pb2_grpc.add_AgentServiceServicer_to_server, AgentServicer(agents)),
        health_checks={"database": partial(db.ping, engine)},
        on_shutdown=[agents.close, partial(asyncio.to_thread, sandbox.close), rag_engine.close, knowledge.close, engine.dispose]
        + ([reasoner.close] if reasoner else []),
    )


def main() -> None:
    server.run("agent", build, AgentSettings())


if __name__ == "__main__":
    main()
