"""Control-flow signals of the worker. They derive from BaseException, so `except Exception`
in user code cannot swallow them; once a run is frozen, every durable call in it raises
its signal again, so no code can carry on past one."""

from __future__ import annotations


class Frozen(BaseException):
    """The run was frozen: nothing in it may record anything more."""

    reason = "frozen"

    def __str__(self) -> str:
        return f"the run was frozen ({self.reason}); this signal unwinds it"


class Suspended(Frozen):
    reason = "suspended: every branch waits past suspend_after"


class LeaseLost(Frozen):
    reason = "lease lost: another worker took the run over"


class StoreLost(Frozen):
    reason = "the database could not record a checkpoint; the run is handed back"


class ShuttingDown(Frozen):
    reason = "the worker is shutting down; the run is released to another worker"


class Ended(Frozen):
    """The run is being ended by the worker (timed out, canceled past its grace, fatal)."""

    reason = "ended"
