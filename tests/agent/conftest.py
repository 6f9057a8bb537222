from __future__ import annotations

from collections.abc import Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass

import pytest

from meshkit.channels import create_channel
from meshkit.sandbox import Sandbox
from meshkit.server import MeshServer
from sagemesh.agent.v1 import agent_pb2_grpc
from services.agent import server as agent_server
from services.agent.settings import AgentSettings
from tests.agent.scripted_model import ScriptedModel
from tests.conftest import free_port, serving_asgi


@pytest.fixture(scope="session")
def tool_sandbox() -> Iterator[Sandbox]:
    """The agent's tool sandbox as the server builds it, with the default limits: real worker processes."""
    sandbox = agent_server.tool_sandbox(AgentSettings(_env_file=None))
    yield sandbox
    sandbox.close()


@dataclass(frozen=True)
class AgentWithModel:
    stub: agent_pb2_grpc.AgentServiceStub
    auth: list[tuple[str, str]]
    address: str
    settings: AgentSettings


@pytest.fixture
async def agent_with(tmp_path, keys_dir, tokens):
    """Starts an agent server whose reasoning model is the given ScriptedModel, or with none
    (the rag_engine it points at is not running)."""

    async def start(model: ScriptedModel | None = None, **settings_fields) -> AgentWithModel:
        if model is not None:
            url = await stack.enter_async_context(serving_asgi(model.app()))
            settings_fields |= {"agent_reasoner_url": f"{url}/v1", "agent_reasoner_models": "scripted-model"}
        settings = AgentSettings(_env_file=None, data_dir=tmp_path, jwt_keys_dir=keys_dir, listen_port=0,
                                 rag_engine_addr=f"127.0.0.1:{free_port()}", **settings_fields)
        server = MeshServer(await agent_server.build(settings), settings)
        await server.start()
        stack.push_async_callback(server.stop, 0)
        channel = create_channel(server.address, settings)
        stack.push_async_callback(channel.close)
        return AgentWithModel(agent_pb2_grpc.AgentServiceStub(channel), tokens.metadata("acme"), server.address,
                              settings)

    async with AsyncExitStack() as stack:
        yield start
