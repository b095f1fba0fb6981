"""Step failures as journal data, and back.

A permanent step failure is recorded as its class's module and qualified name, its
message, its traceback text and its arguments (when JSON carries them exactly). On replay
the same exception type is rebuilt from them, so ``except SomeError`` takes the same branch
as it did live; when that cannot be done, ``StepFailed`` stands in with the recorded type,
message and traceback.
"""

from __future__ import annotations

import importlib
import sys
import traceback
from typing import Any

from perdure import exceptions, serialization


def short_type(exc: BaseException) -> str:
    """``"module.QualName"`` of the exception's class; builtins and perdure's own errors
    (all exported as ``perdure.<Name>``) go bare (``"ValueError"``, ``"NonRetryableError"``)."""
    cls = type(exc)
    if cls.__module__ == "builtins" or cls.__module__ == "perdure.exceptions":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


def describe(exc: BaseException) -> dict[str, Any]:
    """The exception as JSON-ready data: type, module, qualname, message, traceback, args.

    ``args`` is None when JSON cannot carry them exactly. Never raises, whatever the
    exception's ``__str__`` or arguments do.
    """
    cls = type(exc)
    return {
        "type": short_type(exc),
        "module": cls.__module__,
        "qualname": cls.__qualname__,
        "message": _message(exc),
        "traceback": _traceback(exc),
        "args": _args(exc),
    }


def rebuild(data: dict[str, Any]) -> BaseException:
    """The exception ``describe`` recorded, or ``StepFailed`` where it cannot be rebuilt.

    Only imports the recorded module (a dotted name of identifiers) and calls the class with
    the recorded arguments; never raises.
    """
    try:
        rebuilt = _construct(data)
    except Exception:  # a module failing to import, a constructor refusing its args
        rebuilt = None
    return rebuilt if rebuilt is not None else _stand_in(data)


def _construct(data: dict[str, Any]) -> BaseException | None:
    args = data.get("args")
    cls = _find_class(data.get("module"), data.get("qualname"))
    if cls is None or not isinstance(args, list):
        return None
    rebuilt = cls(*args)
    # A class may override __new__ to return anything at all.
    return rebuilt if isinstance(rebuilt, Exception) else None


def _find_class(module_name: Any, qualname: Any) -> type[Exception] | None:
    if not (_is_dotted_name(module_name) and _is_dotted_name(qualname)):
        return None
    module = sys.modules.get(module_name) or importlib.import_module(module_name)
    found: Any = module
    for part in qualname.split("."):
        # vars(), not getattr(): no module __getattr__ or class descriptor runs.
        found = vars(found).get(part)
        if found is None:
            return None
    if isinstance(found, type) and issubclass(found, Exception):
        return found
    return None


def _is_dotted_name(name: Any) -> bool:
    return isinstance(name, str) and all(part.isidentifier() for part in name.split("."))


def _stand_in(data: dict[str, Any]) -> exceptions.StepFailed:
    try:
        recorded = data.get("traceback")
        return exceptions.StepFailed(
            str(data.get("type") or "unknown"),
            str(data.get("message") or ""),
            recorded if isinstance(recorded, str) else None,
        )
    except Exception:  # data that is not even a dict
        return exceptions.StepFailed("unknown", repr(data)[:200], None)


def _message(exc: BaseException) -> str:
    try:
        return _valid_text(str(exc))
    except Exception:  # a __str__ that raises
        return f"<unprintable {short_type(exc)}>"


def _traceback(exc: BaseException) -> str | None:
    if exc.__traceback__ is None:
        return None
    try:
        return _valid_text("".join(traceback.format_exception(exc)))
    except Exception:
        return None


def _args(exc: BaseException) -> list[Any] | None:
    if isinstance(exc, exceptions.StepFailed):
        # Its args hold the formatted message; these are what its constructor takes.
        args: list[Any] = [exc.type, exc.message, exc.traceback]
    else:
        args = list(exc.args)
    try:
        serialization.to_json(args, "exception arguments")
    except exceptions.PayloadError:
        return None
    return args


def _valid_text(text: str) -> str:
    # A lone surrogate would make the record unwritable as UTF-8, and the failure lost.
    return text.encode("utf-8", "replace").decode("utf-8")
