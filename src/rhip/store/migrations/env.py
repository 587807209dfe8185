"""Alembic environment: always run on the connection handed over by :func:`rhip.store.migrations.upgrade`."""

from __future__ import annotations

from alembic import context

import rhip.store.index_schema  # noqa: F401  (registers the search index tables on METADATA)
from rhip.store.schema import METADATA

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("store migrations run through rhip.store.migrations.upgrade(engine)")

context.configure(connection=connection, target_metadata=METADATA, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
