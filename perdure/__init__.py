"""perdure: durable execution for Python.

A task is an ordinary Python function; every durable operation inside it (a step, a
sleep, a recorded value) is checkpointed, so the task survives crashes, deploys and long
waits and resumes where it was, without re-running what already finished.
"""

from perdure.app import App, RunHandle
from perdure.exceptions import (
    ChildRunFailed,
    ConfigurationError,
    InvalidTransition,
    NonDeterminismError,
    NonRetryableError,
    PayloadError,
    PerdureError,
    RunCanceled,
    RunFailed,
    RunNotFound,
    StepFailed,
    StoreError,
    TokenNotFound,
    WaitTimeout,
)
from perdure.retry import Retry
from perdure.runs import Result, Run, RunError, RunStatus
from perdure.runtime import (
    RunContext,
    context,
    create_token,
    logger,
    metadata,
    now,
    random,
    run_step,
    sleep,
    sleep_until,
    uuid4,
    wait_for_token,
)
from perdure.tasks import Task, step
from perdure.tokens import Token, TokenRecord, TokenStatus

__version__ = "0.1.0"

__all__ = [
    "App",
    "ChildRunFailed",
    "ConfigurationError",
    "InvalidTransition",
    "NonDeterminismError",
    "NonRetryableError",
    "PayloadError",
    "PerdureError",
    "Result",
    "Retry",
    "Run",
    "RunCanceled",
    "RunContext",
    "RunError",
    "RunFailed",
    "RunHandle",
    "RunNotFound",
    "RunStatus",
    "StepFailed",
    "StoreError",
    "Task",
    "Token",
    "TokenNotFound",
    "TokenRecord",
    "TokenStatus",
    "WaitTimeout",
    "context",
    "create_token",
    "logger",
    "metadata",
    "now",
    "random",
    "run_step",
    "sleep",
    "sleep_until",
    "step",
    "uuid4",
    "wait_for_token",
]
