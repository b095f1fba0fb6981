"""The public API of DESIGN.md §2: `perdure.__all__`, the error tree, the command line."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import pytest

import perdure
from perdure import exceptions

DESIGN_NAMES = [
    "App",
    "Retry",
    "step",
    "run_step",
    "sleep",
    "sleep_until",
    "now",
    "random",
    "uuid4",
    "context",
    "logger",
    "metadata",
]
DESIGN_ERRORS = [
    "PerdureError",
    "NonRetryableError",
    "NonDeterminismError",
    "RunFailed",
    "RunCanceled",
    "WaitTimeout",
    "ChildRunFailed",
    "StepFailed",
    "PayloadError",
]


def test_all_is_sorted_without_duplicates() -> None:
    assert perdure.__all__ == sorted(perdure.__all__)
    assert len(set(perdure.__all__)) == len(perdure.__all__)


def test_every_name_in_all_exists() -> None:
    missing = [name for name in perdure.__all__ if not hasattr(perdure, name)]
    assert missing == []


@pytest.mark.parametrize("name", DESIGN_NAMES + DESIGN_ERRORS)
def test_all_holds_the_names_of_the_design(name: str) -> None:
    assert name in perdure.__all__


def test_star_import_gives_exactly_all() -> None:
    namespace: dict[str, object] = {}
    exec("from perdure import *", namespace)
    assert sorted(k for k in namespace if k != "__builtins__") == perdure.__all__


@pytest.mark.parametrize("name", DESIGN_ERRORS)
def test_every_design_error_derives_from_perdure_error(name: str) -> None:
    error = getattr(perdure, name)
    assert issubclass(error, Exception)
    assert issubclass(error, perdure.PerdureError)


def test_every_exception_perdure_exports_or_defines_has_one_root() -> None:
    exported = [getattr(perdure, n) for n in perdure.__all__]
    defined = [
        obj
        for _, obj in inspect.getmembers(exceptions, inspect.isclass)
        if obj.__module__ == exceptions.__name__
    ]
    errors = {c for c in exported + defined if isinstance(c, type) and issubclass(c, BaseException)}
    assert errors, "no exception classes found"
    assert [e.__name__ for e in errors if not issubclass(e, perdure.PerdureError)] == []


def test_perdure_error_is_an_ordinary_exception() -> None:
    # Signals that user code must not swallow are BaseExceptions; errors are not.
    assert issubclass(perdure.PerdureError, Exception)
    assert issubclass(perdure.ChildRunFailed, perdure.RunFailed)


def test_any_error_may_ask_for_a_retry_delay() -> None:
    assert perdure.NonRetryableError("no", retry_after=3).retry_after == 3
    assert perdure.PerdureError("x").retry_after is None


def test_the_public_api_is_documented() -> None:
    undocumented = [
        name
        for name in DESIGN_NAMES + DESIGN_ERRORS
        if not (inspect.getdoc(getattr(perdure, name)) or "").strip()
    ]
    assert undocumented == []


# --- the command line --------------------------------------------------------------------------


def perdure_script() -> str:
    script = Path(sys.executable).with_name("perdure")
    assert script.exists(), (
        f"the `perdure` console script is not installed next to {sys.executable}"
    )
    return str(script)


@pytest.mark.parametrize(
    "command",
    [
        pytest.param([sys.executable, "-m", "perdure"], id="python -m perdure"),
        pytest.param(["perdure"], id="perdure"),
    ],
)
def test_help_works_from_the_module_and_the_script(command: list[str], tmp_path: Path) -> None:
    if command == ["perdure"]:
        command = [perdure_script()]
    done = subprocess.run(
        [*command, "--help"], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: perdure")
    for sub in ("worker", "dev", "trigger", "runs", "db"):
        assert sub in done.stdout
    assert done.stderr == ""
