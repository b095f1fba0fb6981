"""The store contract suite runs once per backend (STYLE.md habit 2).

A backend is a name, a way to make a fresh database for one test, and a way to open a
store on it. Adding PostgreSQL is one more entry in BACKENDS; every contract test then
runs against it too.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from perdure.store import base
from perdure.store.sqlite import SqliteStore
from tests import postgres
from tests.store import support


@dataclass(frozen=True)
class Backend:
    name: str
    # A fresh, empty database for one test, as a URL.
    fresh_url: Callable[[Path], str]
    # A store (not yet opened) on that database.
    make: Callable[[str], base.Store]


def _postgres_store(url: str) -> base.Store:
    from perdure.store.postgres import PostgresStore

    return PostgresStore(url)


BACKENDS: dict[str, Backend] = {
    "sqlite": Backend(
        name="sqlite",
        fresh_url=lambda tmp: f"sqlite:///{tmp / 'store.db'}",
        make=lambda url: SqliteStore(url),
    ),
    "postgres": Backend(
        name="postgres",
        fresh_url=lambda tmp: postgres.fresh_url(),
        make=_postgres_store,
    ),
}


@pytest.fixture(params=sorted(BACKENDS))
def backend(request: pytest.FixtureRequest) -> Backend:
    return BACKENDS[request.param]


@pytest.fixture
def store_url(backend: Backend, tmp_path: Path) -> str:
    return backend.fresh_url(tmp_path)


OpenStore = Callable[[], Awaitable[base.Store]]


@pytest.fixture
async def open_store(backend: Backend, store_url: str) -> AsyncIterator[OpenStore]:
    """open_store() -> another opened store on this test's database (another process's
    view of it: its own connections and its own worker locks). Closed at teardown."""
    opened: list[base.Store] = []

    async def open_one() -> base.Store:
        store = backend.make(store_url)
        await store.open()
        opened.append(store)
        return store

    yield open_one
    for store in reversed(opened):
        await store.close()


@pytest.fixture
async def store(open_store: OpenStore) -> base.Store:
    """An opened store on a fresh database."""
    return await open_store()


@pytest.fixture
async def worker(store: base.Store) -> support.Worker:
    """A live worker registered through `store`."""
    await store.register_worker(support.worker_info("wrk_main"))
    return support.Worker(id="wrk_main", store=store)


@pytest.fixture
def start_worker(open_store: OpenStore) -> Callable[[str], Awaitable[support.Worker]]:
    """start_worker(id) -> a live worker registered through a store of its own, as if it
    ran in a process of its own."""

    async def start(worker_id: str) -> support.Worker:
        own = await open_store()
        await own.register_worker(support.worker_info(worker_id))
        return support.Worker(id=worker_id, store=own)

    return start
