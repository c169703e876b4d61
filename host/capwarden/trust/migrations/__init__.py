"""Alembic migrations of the trust database (run by capwarden.trust.db.Database.migrate)."""
