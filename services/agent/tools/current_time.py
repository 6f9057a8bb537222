"""current_time: the date and time now, in UTC or a named time zone."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from services.agent.tools import Tool, ToolContext, ToolError


async def _run(arguments: dict[str, Any], context: ToolContext) -> dict[str, Any]:
    name = arguments.get("timezone", "UTC")
    try:
        zone = timezone.utc if name == "UTC" else ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ToolError(f"{name!r} is not an IANA time zone such as 'Europe/Zurich'") from None
    now = datetime.now(zone)
    return {"timezone": name, "iso": now.isoformat(timespec="seconds"), "date": now.date().isoformat(),
            "weekday": now.strftime("%A")}


TOOL = Tool(
    name="current_time",
    description="The current date, time and weekday, in UTC or an IANA time zone.",
    input_schema={
        "type": "object",
        "properties": {"timezone": {"type": "string", "description": "e.g. Europe/Zurich; UTC if omitted"}},
        "additionalProperties": False,
    },
    run=_run,
    timeout_seconds=1.0,
)
