"""Alembic environment: migrations always run on a connection handed in by storage.migrate."""

from alembic import context

import storage.schema  # noqa: F401  (registers every table)
from storage.models import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations with `distbot db upgrade`")

context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
