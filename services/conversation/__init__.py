"""The conversation service: conversations, their messages, and answers through the rag_engine."""
