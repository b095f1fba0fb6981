"""Run ids: 26 lowercase Crockford base-32 digits after a prefix, the time first. A child's
id is derived from its parent's id and journal position, the same on every replay: the ids
are pinned here, so that a change of their derivation is a decision, never the accident of
a refactor."""

from __future__ import annotations

import re
import time

from perdure import runs
from perdure.app import new_id
from perdure.child_runs import child_id


def test_child_ids_are_those_of_earlier_releases() -> None:
    assert child_id("run_0123", runs.Key(branch="0", seq=3), 0) == "run_hw92nqp0cwrree1ee9g154fw54"
    assert child_id("run_0123", runs.Key(branch="b.1", seq=17), 5) == (
        "run_r3htk3k6mdse4h5rr2a0wb31f0"
    )


def test_new_ids_have_their_format_and_sort_by_time() -> None:
    first = new_id("run")
    deadline = time.monotonic() + 1
    while (second := new_id("run"))[4:14] == first[4:14]:  # its first 10 digits: the time
        assert time.monotonic() < deadline
    for made in (first, second):
        assert re.fullmatch(r"run_[0-9a-hjkmnp-tv-z]{26}", made), made
    assert first < second
    assert new_id("tok").startswith("tok_")
