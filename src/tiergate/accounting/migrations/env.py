"""Alembic's environment: migrate the connection that :func:`tiergate.accounting.database.migrate` hands over."""

from __future__ import annotations

from alembic import context

from tiergate.accounting.schema import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata)
with context.begin_transaction():
    context.run_migrations()
