"""The errors perdure raises, all under one root.

    PerdureError
    ├── ConfigurationError      a setting, a registration or an APP path is wrong
    ├── StoreError              the database cannot be used (corrupt, foreign, newer schema)
    ├── PayloadError            a value cannot be validated or serialized exactly
    ├── NonRetryableError       raise it in a task or step to fail without retry
    ├── NonDeterminismError     the code asked for something else than the journal holds
    ├── StepFailed              a recorded step failure whose exception cannot be rebuilt
    ├── RunFailed               a run ended failed, timed_out or expired (carries .error)
    │   └── ChildRunFailed      ... and that run was a child the caller waited on
    ├── RunCanceled             a run ended canceled
    ├── WaitTimeout             a durable wait reached its timeout
    ├── RunNotFound             no run has that id
    ├── TokenNotFound           no token has that id
    └── InvalidTransition       the run is not in a status that allows the call

Any exception may carry ``retry_after`` (seconds) to ask for a specific delay before the
next attempt, as for an HTTP 429. Control-flow signals of the worker (suspension, lost
lease, cancellation grace) derive from ``BaseException`` and live in ``perdure.signals``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from perdure.runs import RunError


class PerdureError(Exception):
    """The root of every error perdure raises."""

    def __init__(self, message: str = "", *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ConfigurationError(PerdureError):
    """A setting, a task registration or an APP path is wrong."""


class StoreError(PerdureError):
    """The database cannot be used as it is; nothing was changed."""


class PayloadError(PerdureError):
    """A payload, output or step result cannot be validated or serialized exactly."""


class NonRetryableError(PerdureError):
    """Raise it to fail the step or the run at once, without retry."""


class NonDeterminismError(PerdureError):
    """The code asked for another durable operation than the journal holds at that key."""


class StepFailed(PerdureError):
    """A step failure recorded in the journal whose exception type cannot be rebuilt."""

    def __init__(self, type: str, message: str, traceback: str | None = None) -> None:
        super().__init__(f"{type}: {message}")
        self.type = type
        self.message = message
        self.traceback = traceback


class RunFailed(PerdureError):
    """The run ended ``failed``, ``timed_out`` or ``expired``; ``error`` says why."""

    def __init__(self, run_id: str, error: RunError | None) -> None:
        detail = f"{error.type}: {error.message}" if error else "no error recorded"
        super().__init__(f"run {run_id} failed: {detail}")
        self.run_id = run_id
        self.error = error


class ChildRunFailed(RunFailed):
    """A child run the task waited on did not complete."""


class RunCanceled(PerdureError):
    """The run ended ``canceled``."""

    def __init__(self, run_id: str) -> None:
        super().__init__(f"run {run_id} was canceled")
        self.run_id = run_id


class WaitTimeout(PerdureError):
    """A durable wait (a token, a child) reached its timeout."""


class RunNotFound(PerdureError):
    """No run has that id."""


class TokenNotFound(PerdureError):
    """No token has that id."""


class InvalidTransition(PerdureError):
    """The run's status does not allow this call (say, retrying a completed run)."""


def retry_after_of(exc: BaseException) -> float | None:
    """The delay an exception asks for before the next attempt, if it asks for one."""
    value: Any = getattr(exc, "retry_after", None)
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return float(value)
    return None
