"""meshkit.db.connection_lost tells a database that is not there (a retry may
get past it: UNAVAILABLE) from a statement that is wrong (a bug: INTERNAL)."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from meshkit import db
from tests.conftest import free_port


async def test_a_database_that_does_not_answer_is_unavailable():
    engine = db.create_engine(f"postgresql://postgres@127.0.0.1:{free_port()}/nothing")
    with pytest.raises(Exception) as refused:
        async with engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
    await engine.dispose()
    assert db.connection_lost(refused.value)


async def test_a_wrong_statement_is_not(postgres_url):
    engine = db.create_engine(postgres_url)
    with pytest.raises(Exception) as refused:
        async with engine.connect() as connection:
            await connection.execute(text("SELECT * FROM no_such_table"))
    await engine.dispose()
    assert not db.connection_lost(refused.value)
