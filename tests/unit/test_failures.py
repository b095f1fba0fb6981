"""A recorded step failure comes back as the same exception type, or as StepFailed."""

from __future__ import annotations

import json
import pathlib
import sys
from typing import Any

import pytest

from perdure import exceptions, failures


class QuotaExceeded(Exception):
    def __init__(self, account: str, limit: int) -> None:
        super().__init__(account, limit)
        self.account = account
        self.limit = limit


class NeedsTwo(Exception):
    def __init__(self, first: str, second: str) -> None:
        super().__init__(f"{first} and {second}")


class Outer:
    class Inner(ValueError):
        pass


class NotAnError:
    """A class whose constructor leaves a trace: rebuild must never call it."""

    calls = 0

    def __init__(self, *args: Any) -> None:
        NotAnError.calls += 1


def raised(exc: BaseException) -> BaseException:
    """``exc`` after a raise, so it carries a traceback."""
    try:
        raise exc
    except BaseException as caught:
        return caught


def recorded(exc: BaseException) -> dict[str, Any]:
    """``describe`` as the journal keeps it: through JSON text."""
    data: dict[str, Any] = json.loads(json.dumps(failures.describe(exc)))
    return data


def test_a_builtin_exception_is_described_by_its_bare_name() -> None:
    data = recorded(raised(ValueError("bad input")))
    assert data["type"] == "ValueError"
    assert (data["module"], data["qualname"]) == ("builtins", "ValueError")
    assert data["message"] == "bad input"
    assert data["args"] == ["bad input"]
    assert "raise exc" in data["traceback"]


def test_a_builtin_exception_is_rebuilt_as_itself() -> None:
    rebuilt = failures.rebuild(recorded(raised(KeyError("missing"))))
    assert type(rebuilt) is KeyError
    assert rebuilt.args == ("missing",)


def test_a_custom_exception_is_rebuilt_with_its_arguments() -> None:
    data = recorded(raised(QuotaExceeded("acme", 100)))
    assert data["type"] == f"{QuotaExceeded.__module__}.QuotaExceeded"
    rebuilt = failures.rebuild(data)
    assert type(rebuilt) is QuotaExceeded
    assert (rebuilt.account, rebuilt.limit) == ("acme", 100)
    assert str(rebuilt) == data["message"]


def test_a_nested_exception_class_is_found_by_its_qualname() -> None:
    data = recorded(Outer.Inner("deep"))
    assert data["qualname"] == "Outer.Inner"
    rebuilt = failures.rebuild(data)
    assert type(rebuilt) is Outer.Inner
    assert rebuilt.args == ("deep",)


def test_arguments_json_cannot_carry_give_step_failed_with_type_and_message() -> None:
    data = recorded(raised(QuotaExceeded("acme", object())))  # type: ignore[arg-type]
    assert data["args"] is None
    rebuilt = failures.rebuild(data)
    assert isinstance(rebuilt, exceptions.StepFailed)
    assert rebuilt.type == f"{QuotaExceeded.__module__}.QuotaExceeded"
    assert rebuilt.message == data["message"]
    assert rebuilt.traceback == data["traceback"]


def test_a_tuple_argument_is_not_json_exact() -> None:
    assert failures.describe(KeyError(("a", 1)))["args"] is None


def test_a_constructor_that_refuses_the_arguments_gives_step_failed() -> None:
    rebuilt = failures.rebuild(recorded(NeedsTwo("a", "b")))
    assert isinstance(rebuilt, exceptions.StepFailed)
    assert str(rebuilt) == f"{NeedsTwo.__module__}.NeedsTwo: a and b"


def test_a_missing_module_gives_step_failed() -> None:
    data = {
        "type": "gone_module_xyz.Boom",
        "module": "gone_module_xyz",
        "qualname": "Boom",
        "message": "it broke",
        "traceback": "Traceback ...",
        "args": ["it broke"],
    }
    rebuilt = failures.rebuild(data)
    assert isinstance(rebuilt, exceptions.StepFailed)
    assert (rebuilt.type, rebuilt.message, rebuilt.traceback) == (
        "gone_module_xyz.Boom",
        "it broke",
        "Traceback ...",
    )


@pytest.mark.parametrize(
    ("module", "qualname"),
    [
        ("builtins", "dict"),  # not an exception class
        ("builtins", "print"),  # not a class at all
        ("builtins", "KeyboardInterrupt"),  # a BaseException, not an Exception
        ("builtins", "NoSuchError"),
        ("os;import sys", "Error"),  # not a dotted name: never imported
        ("builtins", "ValueError.__class__"),
    ],
)
def test_what_is_not_an_exception_class_gives_step_failed(module: str, qualname: str) -> None:
    data = {"type": "x", "module": module, "qualname": qualname, "message": "m", "args": []}
    assert isinstance(failures.rebuild(data), exceptions.StepFailed)


def test_a_class_that_is_not_an_exception_is_never_called() -> None:
    data = {"module": __name__, "qualname": "NotAnError", "message": "m", "args": []}
    assert isinstance(failures.rebuild(data), exceptions.StepFailed)
    assert NotAnError.calls == 0


def test_a_module_name_that_is_not_dotted_identifiers_is_never_imported(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "side-effect.py").write_text("class Boom(Exception):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    data = {"module": "side-effect", "qualname": "Boom", "message": "m", "args": []}
    assert isinstance(failures.rebuild(data), exceptions.StepFailed)
    assert "side-effect" not in sys.modules


def test_malformed_data_still_gives_step_failed() -> None:
    assert isinstance(failures.rebuild({}), exceptions.StepFailed)
    assert isinstance(failures.rebuild(None), exceptions.StepFailed)  # type: ignore[arg-type]


def test_step_failed_is_rebuilt_as_itself() -> None:
    original = exceptions.StepFailed("acme.Boom", "it broke", "Traceback ...")
    rebuilt = failures.rebuild(recorded(original))
    assert isinstance(rebuilt, exceptions.StepFailed)
    assert (rebuilt.type, rebuilt.message, rebuilt.traceback) == (
        "acme.Boom",
        "it broke",
        "Traceback ...",
    )


def test_any_exception_is_described_as_json() -> None:
    class Unprintable(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no")

    data = failures.describe(raised(Unprintable(object(), b"\xff", "a\ud800")))
    text = json.dumps(data, ensure_ascii=False).encode("utf-8")
    assert json.loads(text)["message"].startswith("<unprintable ")
    assert data["args"] is None


def test_an_exception_never_raised_has_no_traceback() -> None:
    assert failures.describe(ValueError("x"))["traceback"] is None


def test_short_type_names_builtins_bare_and_others_in_full() -> None:
    assert failures.short_type(ValueError()) == "ValueError"
    assert failures.short_type(exceptions.PayloadError()) == "PayloadError"
    assert failures.short_type(Outer.Inner()) == f"{Outer.__module__}.Outer.Inner"
