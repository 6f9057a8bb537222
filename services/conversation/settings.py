from __future__ import annotations

from meshkit.settings import MeshSettings


class ConversationSettings(MeshSettings):
    # Earlier messages sent along with a new one as context.
    history_messages: int = 10
    # Longest an answer may take, end to end.
    answer_timeout_seconds: float = 120.0
