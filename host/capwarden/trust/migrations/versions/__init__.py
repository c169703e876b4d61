"""Alembic revisions of the trust database, one file each, applied in down_revision order."""
