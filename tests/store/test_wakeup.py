"""SQLite's wake-ups between processes: a datagram to every worker listening on the same
database file, and nothing left in the temporary directory once the last one stops."""

from __future__ import annotations

from pathlib import Path

from perdure.store.wakeup import Wakeup


async def test_a_notification_wakes_every_listener_of_the_database(tmp_path: Path) -> None:
    database = tmp_path / "db.sqlite"
    first, second, sender = Wakeup(database), Wakeup(database), Wakeup(database)
    first.listen("wrk_a")
    second.listen("wrk_b")
    try:
        sender.notify()
        assert await first.wait(5) and await second.wait(5)
        assert not await first.wait(0.01)  # drained: one wake-up per notification burst
    finally:
        for wakeup in (first, second, sender):
            wakeup.close()


async def test_a_wake_up_says_whether_a_cancel_was_asked_for(tmp_path: Path) -> None:
    """Workers look for cancel requests only when a wake-up says one was made, not at every
    trigger and every finished run."""
    database = tmp_path / "db.sqlite"
    listener, sender = Wakeup(database), Wakeup(database)
    listener.listen("wrk_a")
    try:
        sender.notify()
        assert await listener.wait(5)
        assert not listener.take_cancel_asked()
        sender.notify()
        sender.notify(cancel=True)
        sender.notify()
        assert await listener.wait(5)  # one wake-up for the burst, which held a cancel
        assert listener.take_cancel_asked()
        assert not listener.take_cancel_asked()  # taken
    finally:
        listener.close()
        sender.close()


async def test_the_last_listener_to_stop_removes_the_databases_directory(tmp_path: Path) -> None:
    database = tmp_path / "db.sqlite"
    first, second = Wakeup(database), Wakeup(database)
    first.listen("wrk_a")
    second.listen("wrk_b")
    first.close()
    assert second.directory.exists()  # still in use
    second.close()
    assert not second.directory.exists()
    again = Wakeup(database)
    again.listen("wrk_c")  # a worker starting afterwards makes it anew
    try:
        assert again.directory.exists()
    finally:
        again.close()
