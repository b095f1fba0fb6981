"""The claim's pause of the cyclic garbage collector (perdure.store.ops._no_gc) while it
builds a long journal: pauses of several threads overlap, and the collector comes back on
only once the last ends, and only if it was on before."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from perdure.store import ops


@pytest.fixture(autouse=True)
def _collector_restored() -> Iterator[None]:
    was_on = gc.isenabled()
    yield
    (gc.enable if was_on else gc.disable)()


def test_overlapping_pauses_turn_the_collector_on_when_the_last_ends() -> None:
    gc.enable()
    first, second = ops._no_gc(), ops._no_gc()
    first.__enter__()
    second.__enter__()  # another thread, while the first pauses
    first.__exit__(None, None, None)
    assert not gc.isenabled()  # the second still builds its entries
    second.__exit__(None, None, None)
    assert gc.isenabled()


def test_a_collector_the_application_turned_off_stays_off() -> None:
    gc.disable()
    with ops._no_gc(), ops._no_gc():
        pass
    assert not gc.isenabled()
