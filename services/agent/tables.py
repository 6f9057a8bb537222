"""Agent's tables. Schema changes go through migrations/."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Index, MetaData, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from meshkit.db import NAMING_CONVENTION, UtcDateTime


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UtcDateTime, dict[str, Any]: JSON}


class RunRow(Base):
    """A finished run, as its user may fetch it later."""

    __tablename__ = "agent_runs"
    __table_args__ = (Index("ix_agent_runs_user_created", "user_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(36))
    user_id: Mapped[str] = mapped_column(String(36))
    task: Mapped[str] = mapped_column(Text)
    # The whole run (plan, trace, result, stats) in the API's JSON form.
    run: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]
