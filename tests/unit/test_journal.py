"""The replay core: journal keys per branch, matching, NonDeterminismError, value keys."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest

from perdure import branches, exceptions, execution, journal, runs

STEP, SLEEP, VALUE = runs.EntryKind.STEP, runs.EntryKind.SLEEP, runs.EntryKind.VALUE


def key(branch: str, seq: int, sub: str = "") -> runs.Key:
    return runs.Key(branch=branch, seq=seq, sub=sub)


def entry(k: runs.Key, kind: runs.EntryKind, name: str, *, attempt: int = 1) -> runs.Entry:
    return runs.Entry(
        key=k,
        kind=kind,
        name=name,
        status=runs.EntryStatus.COMPLETED,
        result=json.dumps(name),
        attempt=attempt,
    )


def stub_execution(entries: list[runs.Entry] | None = None) -> Any:
    """The few attributes of an Execution that branches and recorded values touch."""
    return SimpleNamespace(
        journal=journal.Journal(entries or []), branches=[], attempt=1, pending_values=[]
    )


# --- keys per branch ------------------------------------------------------------------------


def test_the_kth_branch_spawned_by_a_branch_is_named_after_it() -> None:
    assert journal.child_branch("0", 1) == "0.1"
    assert journal.child_branch("0", 2) == "0.2"
    assert journal.child_branch("0.2", 1) == "0.2.1"


def test_each_branch_numbers_its_durable_operations_from_one() -> None:
    body = branches.Branch(stub_execution(), "0")
    assert body.next_key() == key("0", 1)
    first, second = body.spawn(), body.spawn()
    assert (first.id, second.id) == ("0.1", "0.2")
    # Whatever order the branches run in, each takes its own sequence.
    assert second.next_key() == key("0.2", 1)
    assert first.next_key() == key("0.1", 1)
    assert second.next_key() == key("0.2", 2)
    assert body.next_key() == key("0", 2)


def test_the_same_sequence_number_in_two_branches_is_two_keys() -> None:
    book = journal.Journal(
        [entry(key("0.1", 1), STEP, "left"), entry(key("0.2", 1), STEP, "right")]
    )
    assert len(book) == 2
    left = book.match(key("0.1", 1), STEP, "left")
    right = book.match(key("0.2", 1), STEP, "right")
    assert left is not None and left.result == json.dumps("left")
    assert right is not None and right.result == json.dumps("right")
    assert book.match(key("0.3", 1), STEP, "left") is None


def test_a_key_is_a_value_usable_as_a_dictionary_key() -> None:
    assert key("0", 3) == key("0", 3)
    assert hash(key("0", 3)) == hash(key("0", 3))
    assert key("0", 3) != key("0.1", 3)
    assert key("0", 3) != key("0", 3, "random:0")
    assert str(key("0", 3)) == "['0', 3]"
    # equal to its plain tuple, hash included: a claim's rows are indexed by such tuples
    assert key("0", 3) == ("0", 3, "") and hash(key("0", 3)) == hash(("0", 3, ""))


# --- matching ---------------------------------------------------------------------------------


def test_match_returns_none_for_a_key_the_journal_does_not_hold() -> None:
    book = journal.Journal([entry(key("0", 1), STEP, "charge")])
    assert book.match(key("0", 2), STEP, "charge") is None


def test_match_returns_the_recorded_entry_for_the_same_operation() -> None:
    recorded = entry(key("0", 1), STEP, "charge")
    book = journal.Journal([recorded])
    assert book.match(key("0", 1), STEP, "charge") is recorded


def test_another_step_name_at_a_key_is_non_determinism_naming_both() -> None:
    book = journal.Journal([entry(key("0", 3), STEP, "refund", attempt=2)])
    with pytest.raises(exceptions.NonDeterminismError) as caught:
        book.match(key("0", 3), STEP, "charge")
    message = str(caught.value)
    assert "['0', 3]" in message
    assert "step 'charge'" in message  # what the code asked for
    assert "step 'refund'" in message  # what the journal holds
    assert "attempt 2" in message


def test_another_kind_at_a_key_is_non_determinism_naming_both() -> None:
    book = journal.Journal([entry(key("0", 3), SLEEP, "sleep")])
    with pytest.raises(exceptions.NonDeterminismError) as caught:
        book.match(key("0", 3), STEP, "charge")
    message = str(caught.value)
    assert "['0', 3]" in message
    assert "step 'charge'" in message
    assert "holds sleep" in message


def test_non_determinism_is_a_perdure_error_that_says_what_to_do() -> None:
    book = journal.Journal([entry(key("0", 1), STEP, "a")])
    with pytest.raises(exceptions.PerdureError, match="perdure runs retry"):
        book.match(key("0", 1), STEP, "b")


def test_put_records_an_entry_that_match_then_finds() -> None:
    book = journal.Journal()
    assert key("0", 1) not in book
    book.put(entry(key("0", 1), STEP, "charge"))
    assert key("0", 1) in book
    assert book.match(key("0", 1), STEP, "charge") is book.get(key("0", 1))
    assert [e.name for e in book.entries()] == ["charge"]


# --- a journal read as rows at a claim ------------------------------------------------------------


def row_of(e: runs.Entry) -> tuple[Any, ...]:
    """The row a store reads for an entry (its ENTRY_COLUMNS)."""
    error = None if e.error is None else json.dumps(e.error)
    return (e.order, *e.key, e.kind.value, e.name, e.status.value, e.result, error,
            e.attempts, e.wake_at, e.started_at, e.finished_at, e.attempt)  # fmt: skip


def recorded_entries() -> list[runs.Entry]:
    failed = runs.Entry(
        key=key("0", 3),
        kind=STEP,
        name="ship",
        status=runs.EntryStatus.FAILED,
        error={"type": "ValueError", "message": "no stock"},
        attempts=3,
        started_at=10.0,
        finished_at=11.5,
        attempt=2,
        order=4,
    )
    return [
        entry(key("0", 1), STEP, "charge"),
        entry(key("0", 2), SLEEP, "sleep"),
        failed,
        entry(key("0", 3, "random:0"), VALUE, "random"),
        runs.Entry(key=key("0.1", 1), kind=STEP, name="nothing", status=runs.EntryStatus.COMPLETED),
    ]


def test_a_journal_read_as_rows_holds_and_matches_the_entries_they_are() -> None:
    entries = recorded_entries()
    book = journal.Journal(runs.Recorded([row_of(e) for e in entries]))
    assert len(book) == len(entries)
    for e in entries:
        assert e.key in book
        assert book.match(e.key, e.kind, e.name) == e
    assert key("0", 4) not in book and book.match(key("0", 4), STEP, "charge") is None
    assert sorted(book.entries(), key=lambda e: e.key) == sorted(entries, key=lambda e: e.key)


def test_another_step_at_a_row_is_non_determinism_naming_both() -> None:
    book = journal.Journal(runs.Recorded([row_of(e) for e in recorded_entries()]))
    with pytest.raises(exceptions.NonDeterminismError, match=r"step 'ship'.*attempt 2"):
        book.match(key("0", 3), STEP, "refund")


def test_a_completed_step_is_read_off_its_row_and_anything_else_is_missing() -> None:
    book = journal.Journal(runs.Recorded([row_of(e) for e in recorded_entries()]))
    assert book.completed_step(key("0", 1), "charge") == '"charge"'
    assert book.completed_step(key("0.1", 1), "nothing") is None  # recorded without a result
    missing = [
        (key("0", 1), "refund"),  # another step: `match` says how
        (key("0", 2), "sleep"),  # not a step
        (key("0", 3), "ship"),  # failed, not completed
        (key("0", 9), "charge"),  # not recorded
    ]
    for k, name in missing:
        assert book.completed_step(k, name) is journal.MISSING


def test_an_entry_put_at_a_key_read_as_a_row_replaces_it() -> None:
    book = journal.Journal(runs.Recorded([row_of(e) for e in recorded_entries()]))
    again = runs.Entry(key=key("0", 3), kind=STEP, name="ship", status=runs.EntryStatus.COMPLETED,
                       result='"shipped"')  # fmt: skip
    book.put(again)
    assert book.match(key("0", 3), STEP, "ship") is again
    assert book.completed_step(key("0", 3), "ship") is journal.MISSING  # the row is gone
    assert len(book) == len(recorded_entries())


def test_recorded_rows_are_the_sequence_of_their_entries() -> None:
    entries = recorded_entries()
    recorded = runs.Recorded([row_of(e) for e in entries])
    assert recorded == entries and list(recorded) == entries and len(recorded) == 5
    assert recorded[2] == entries[2] and recorded[1:3] == entries[1:3]
    assert runs.Recorded([]) == [] and recorded != entries[:4]


# --- now / random / uuid4 values ----------------------------------------------------------------


def test_a_value_key_names_branch_preceding_seq_kind_and_index() -> None:
    value = journal.value_key("0.1", 2, "uuid4", 0)
    assert value == key("0.1", 2, "uuid4:0")
    assert value != journal.value_key("0.1", 2, "uuid4", 1)
    assert value != journal.value_key("0.1", 2, "random", 0)
    assert value != key("0.1", 2)  # never the key of the operation it follows


def record_values(kinds: list[str]) -> tuple[dict[str, list[runs.Key]], runs.Key]:
    """Run the body `step; <values of kinds>; step` live and return the value keys
    by kind and the key the second step takes."""
    run = stub_execution()
    body = branches.Branch(run, "0")
    body.next_key()
    for kind in kinds:
        execution.Execution.value(run, body, kind, lambda: 7, lambda v: v, lambda v: v)
    found: dict[str, list[runs.Key]] = {}
    for recorded in run.pending_values:
        found.setdefault(recorded.name, []).append(recorded.key)
    return found, body.next_key()


def test_adding_a_random_does_not_change_the_key_of_a_later_uuid4() -> None:
    before, next_step_before = record_values(["uuid4", "now"])
    after, next_step_after = record_values(["random", "uuid4", "random", "now"])
    assert after["uuid4"] == before["uuid4"] == [key("0", 1, "uuid4:0")]
    assert after["now"] == before["now"]
    assert after["random"] == [key("0", 1, "random:0"), key("0", 1, "random:1")]
    # Values take no sequence number: the next step keeps its key.
    assert next_step_before == next_step_after == key("0", 2)


def test_a_recorded_value_is_returned_again_instead_of_a_new_one() -> None:
    recorded = runs.Entry(
        key=key("0", 0, "random:0"),
        kind=VALUE,
        name="random",
        status=runs.EntryStatus.COMPLETED,
        result=json.dumps(0.25),
    )
    run = stub_execution([recorded])
    body = branches.Branch(run, "0")
    value = execution.Execution.value(run, body, "random", lambda: 0.99, float, float)
    assert value == 0.25
    assert run.pending_values == []
