"""Storage backends behind one interface (`base.Store`); the only place with SQL."""

from __future__ import annotations

from perdure import exceptions
from perdure.settings import Settings
from perdure.store.base import Store


def from_settings(settings: Settings) -> Store:
    """The store a database URL names."""
    url = settings.database_url
    if url.startswith("sqlite:"):
        from perdure.store import sqlite

        return sqlite.SqliteStore(url, synchronous=settings.sqlite_synchronous)
    if url.startswith(("postgresql://", "postgres://")):
        from perdure.store import postgres

        return postgres.PostgresStore(url)
    scheme = url.split(":", 1)[0]
    raise exceptions.ConfigurationError(
        f"unsupported database URL scheme {scheme!r} in {url!r}; use sqlite:///path.db or postgresql://user@host/database"
    )


__all__ = ["Store", "from_settings"]
