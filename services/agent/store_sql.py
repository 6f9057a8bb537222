"""RunStore on SQLAlchemy: SQLite by default, PostgreSQL in production."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from services.agent.tables import RunRow


class SqlRunStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self.sessions = async_sessionmaker(engine, expire_on_commit=False)

    async def save(self, run_id: str, tenant_id: str, user_id: str, task: str, run: dict[str, Any]) -> None:
        async with self.sessions.begin() as db:
            db.add(RunRow(id=run_id, tenant_id=tenant_id, user_id=user_id, task=task, run=run,
                          created_at=datetime.now(timezone.utc)))

    async def run(self, user_id: str, run_id: str) -> dict[str, Any] | None:
        async with self.sessions() as db:
            row = await db.scalar(select(RunRow).where(RunRow.id == run_id, RunRow.user_id == user_id))
        return dict(row.run) if row else None
