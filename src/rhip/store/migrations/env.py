"""Alembic environment: always run on the connection handed over by :func:`rhip.store.migrations.upgrade`.

Revisions are explicit operations and need no metadata to run. ``target_metadata`` is only for
comparing the database with the code (autogenerate): pass
``rhip.store.migrations.platform_metadata()`` as the config attribute ``target_metadata``.
"""

from __future__ import annotations

from alembic import context

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("store migrations run through rhip.store.migrations.upgrade(engine)")

context.configure(
    connection=connection,
    target_metadata=context.config.attributes.get("target_metadata"),
    render_as_batch=True,
)
with context.begin_transaction():
    context.run_migrations()
