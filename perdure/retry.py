"""Retry policy: given the attempt that just failed, the delay before the next one, or none.

Pure: no I/O, no clock. The randomness is injected so tests can pin it.
"""

from __future__ import annotations

import math
import random as _random
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class Retry:
    """How often, and how far apart, a task or a step is tried.

    The delay before attempt n+1 is ``min(max_delay, min_delay * factor**(n-1))``, jittered
    down by at most half and never below ``min_delay``. Task and step retries multiply: a
    task with ``max_attempts=3`` whose step has ``max_attempts=5`` may call that step 15
    times. An exception's ``retry_after`` (seconds) replaces the computed delay.
    """

    max_attempts: int = 3
    min_delay: float = 1.0
    max_delay: float = 60.0
    factor: float = 2.0

    def __post_init__(self) -> None:
        if any(math.isnan(x) for x in (self.min_delay, self.max_delay, self.factor)):
            raise ValueError("Retry takes numbers for its delays and factor, not nan")
        if self.max_attempts < 1:
            raise ValueError("Retry(max_attempts=...) must be at least 1")
        if self.min_delay < 0 or self.max_delay < self.min_delay:
            raise ValueError("Retry needs 0 <= min_delay <= max_delay")
        if self.factor < 1:
            raise ValueError("Retry(factor=...) must be at least 1")

    def delay(
        self,
        failed_attempt: int,
        *,
        retry_after: float | None = None,
        rand: Callable[[], float] = _random.random,
    ) -> float | None:
        """Seconds to wait before the attempt after ``failed_attempt`` (1-based), or None
        when no attempt is left."""
        if failed_attempt >= self.max_attempts:
            return None
        if retry_after is not None:
            return max(0.0, retry_after)
        ceiling = min(self.max_delay, self.min_delay * self.factor ** (failed_attempt - 1))
        jittered = ceiling * (1 - 0.5 * rand())
        return max(self.min_delay, jittered)


NO_RETRY = Retry(max_attempts=1, min_delay=0, max_delay=0)
