"""The conversation service: `python -m services.conversation.server`."""

from __future__ import annotations

from functools import partial
from pathlib import Path

from meshkit import db, server
from meshkit.channels import channel_to
from meshkit.knowledge_bases_grpc import GrpcKnowledgeBases
from meshkit.topology import SERVICES
from sagemesh.conversation.v1 import conversation_pb2_grpc
from services.conversation.answerer_agent import AgentAnswerer
from services.conversation.answerer_rag import RagAnswerer
from services.conversation.chats import Chats, ChatsConfig
from services.conversation.domain import Mode
from services.conversation.servicer import ConversationServicer
from services.conversation.settings import ConversationSettings
from services.conversation.store_sql import SqlConversationStore

MIGRATIONS = Path(__file__).parent / "migrations"


async def build(settings: ConversationSettings) -> server.ServiceApp:
    engine = db.create_engine(settings.database_url_for("conversation"))
    await db.migrate(engine, MIGRATIONS, version_table="alembic_version_conversation")
    rag_engine = channel_to("rag_engine", settings)
    agent = channel_to("agent", settings)
    knowledge = channel_to("knowledge", settings)
    chats = Chats(
        SqlConversationStore(engine),
        {Mode.RAG: RagAnswerer(rag_engine, settings.answer_timeout_seconds),
         Mode.AGENT: AgentAnswerer(agent, settings.answer_timeout_seconds)},
        GrpcKnowledgeBases(knowledge),
        ChatsConfig(history_messages=settings.history_messages,
                    answer_timeout_seconds=settings.answer_timeout_seconds),
    )
    return server.ServiceApp(
        info=SERVICES["conversation"],
        register=partial(conversation_pb2_grpc.add_ConversationServiceServicer_to_server,
                         ConversationServicer(chats)),
        health_checks={"database": partial(db.ping, engine)},
        on_shutdown=[chats.close, rag_engine.close, agent.close, knowledge.close, engine.dispose],
    )


def main() -> None:
    server.run("conversation", build, ConversationSettings())


if __name__ == "__main__":
    main()
