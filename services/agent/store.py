"""Where finished runs are kept. store_sql.py implements it."""

from __future__ import annotations

from typing import Any, Protocol


class RunStore(Protocol):
    async def save(self, run_id: str, tenant_id: str, user_id: str, task: str, run: dict[str, Any]) -> None: ...

    async def run(self, user_id: str, run_id: str) -> dict[str, Any] | None:
        """The user's run; None for anyone else's."""
