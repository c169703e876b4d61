"""Alembic environment of the trust database: run by capwarden.trust.db.Database.migrate() on
the connection it passes in `config.attributes["connection"]` (no alembic.ini, no URL here)."""

from alembic import context

from capwarden.trust.db import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through capwarden.trust.db.open_db(url).migrate()")
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
