"""Alembic runs migrations on the connection tuneloop hands it (store/db.py: upgrade)."""

from alembic import context

from tuneloop.store.tables import Base

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
