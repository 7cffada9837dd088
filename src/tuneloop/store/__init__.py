"""The store: SQLAlchemy tables, repositories with keyword-only functions, Alembic migrations."""
