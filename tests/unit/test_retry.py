"""Retry policy: the delay before attempt n+1 is min(max_delay, min_delay * factor**(n-1)),
jittered down by at most half and never below min_delay; None when no attempt is left."""

from __future__ import annotations

import pytest

import perdure
from perdure.retry import Retry

ALMOST_ONE = 1 - 1e-12


def no_jitter() -> float:
    return 0.0


def full_jitter() -> float:
    return ALMOST_ONE


def test_defaults_are_three_attempts_one_to_sixty_seconds_doubling() -> None:
    policy = Retry()
    assert (policy.max_attempts, policy.min_delay, policy.max_delay, policy.factor) == (3, 1, 60, 2)
    assert perdure.Retry is Retry


@pytest.mark.parametrize(
    ("failed_attempt", "ceiling"),
    [(1, 1), (2, 2), (3, 4), (4, 8), (5, 16), (6, 32), (7, 60), (8, 60), (20, 60)],
)
def test_without_jitter_the_delay_is_the_capped_exponential(
    failed_attempt: int, ceiling: float
) -> None:
    policy = Retry(max_attempts=100, min_delay=1, max_delay=60, factor=2)
    assert policy.delay(failed_attempt, rand=no_jitter) == ceiling


@pytest.mark.parametrize(
    ("failed_attempt", "floor"),
    [(1, 1), (2, 1), (3, 2), (4, 4), (6, 16), (7, 30), (20, 30)],
)
def test_full_jitter_halves_the_delay_but_never_below_min_delay(
    failed_attempt: int, floor: float
) -> None:
    policy = Retry(max_attempts=100, min_delay=1, max_delay=60, factor=2)
    assert policy.delay(failed_attempt, rand=full_jitter) == pytest.approx(floor, abs=1e-9)


@pytest.mark.parametrize("rand", [0.0, 0.1, 0.25, 0.5, 0.75, 0.9, ALMOST_ONE])
@pytest.mark.parametrize("failed_attempt", [1, 2, 3, 5, 9])
def test_a_jittered_delay_stays_between_half_the_ceiling_and_the_ceiling(
    rand: float, failed_attempt: int
) -> None:
    policy = Retry(max_attempts=10, min_delay=0.5, max_delay=10, factor=3)
    ceiling = min(10, 0.5 * 3 ** (failed_attempt - 1))
    delay = policy.delay(failed_attempt, rand=lambda: rand)
    assert delay is not None
    assert max(0.5, ceiling / 2) - 1e-9 <= delay <= ceiling
    assert delay == pytest.approx(max(0.5, ceiling * (1 - rand / 2)))


def test_the_default_jitter_is_random_within_the_bounds() -> None:
    policy = Retry(max_attempts=10, min_delay=1, max_delay=60, factor=2)
    delays = {policy.delay(5) for _ in range(200)}
    assert all(d is not None and 8 <= d <= 16 for d in delays)
    assert len(delays) > 1


def test_factor_one_keeps_the_delay_constant() -> None:
    policy = Retry(max_attempts=10, min_delay=5, max_delay=60, factor=1)
    assert [policy.delay(n, rand=no_jitter) for n in range(1, 6)] == [5] * 5


def test_no_delay_once_max_attempts_is_reached() -> None:
    policy = Retry(max_attempts=3)
    assert policy.delay(1, rand=no_jitter) is not None
    assert policy.delay(2, rand=no_jitter) is not None
    assert policy.delay(3, rand=no_jitter) is None
    assert policy.delay(4, rand=no_jitter) is None


def test_a_single_attempt_is_never_retried() -> None:
    assert Retry(max_attempts=1).delay(1) is None


def test_retry_after_replaces_the_computed_delay_exactly() -> None:
    policy = Retry(max_attempts=5, min_delay=1, max_delay=60, factor=2)
    assert policy.delay(1, retry_after=7.5, rand=full_jitter) == 7.5
    assert policy.delay(4, retry_after=0.25, rand=full_jitter) == 0.25  # below min_delay
    assert policy.delay(1, retry_after=120, rand=no_jitter) == 120  # above max_delay


def test_retry_after_does_not_add_an_attempt() -> None:
    assert Retry(max_attempts=2).delay(2, retry_after=1) is None


@pytest.mark.parametrize(
    "options",
    [
        {"max_attempts": 0},
        {"max_attempts": -1},
        {"min_delay": -1},
        {"min_delay": 10, "max_delay": 5},
        {"factor": 0.5},
        {"factor": 0},
        {"min_delay": float("nan")},
        {"max_delay": float("nan")},
        {"factor": float("nan")},
    ],
)
def test_invalid_arguments_raise_value_error(options: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="Retry"):
        Retry(**options)  # type: ignore[arg-type]


def test_zero_delays_are_allowed() -> None:
    assert Retry(max_attempts=3, min_delay=0, max_delay=0).delay(1) == 0
