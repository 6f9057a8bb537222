"""knowledge_base: hybrid retrieval over the caller's knowledge bases (the
rag_engine's Retrieve, in the caller's tenant, scoped to the run's bases)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from services.agent.tools import Tool, ToolContext

MAX_SNIPPET_CHARS = 1200


class Retriever(Protocol):
    async def retrieve(self, query: str, kb_ids: Sequence[str], top_k: int) -> list[dict[str, Any]]:
        """Chunks best first: document_id, chunk_id, title, content, page, score."""


def knowledge_base_tool(retriever: Retriever) -> Tool:
    async def run(arguments: dict[str, Any], context: ToolContext) -> dict[str, Any]:
        results = await retriever.retrieve(arguments["query"], context.kb_ids, arguments.get("top_k", 3))
        return {"query": arguments["query"],
                "results": [{**r, "content": r["content"][:MAX_SNIPPET_CHARS]} for r in results]}

    return Tool(
        name="knowledge_base",
        description="Searches the user's documents and returns the passages that best match a query, each "
                    "with its document, title and page. Use it for facts the documents hold.",
        input_schema={
            "type": "object",
            "properties": {
                "query": {"type": "string", "minLength": 1, "maxLength": 1000},
                "top_k": {"type": "integer", "minimum": 1, "maximum": 10, "default": 3},
            },
            "required": ["query"],
            "additionalProperties": False,
        },
        run=run,
        timeout_seconds=15.0,
    )
