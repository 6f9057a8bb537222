from alembic import context

from meshkit.db import run_migrations
from services.agent.tables import Base

run_migrations(context, Base.metadata)
