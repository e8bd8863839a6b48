"""Alembic migrations of the results database (configured programmatically, see reid_tasks.results.store)."""
