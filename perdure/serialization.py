"""Payloads, task outputs and step results <-> JSON text, driven by type hints.

The contract: the caller always receives ``load(dump(value))``, live and on replay alike, so
code cannot take another branch after a crash. A value JSON cannot carry exactly (a set or a
tuple where the hint does not restore it, int dict keys, an unannotated model, NaN) raises
``PayloadError`` where it crosses the boundary, naming where in the value it sits.

Hint ``Any`` (or none) with plain JSON values is the hot path: a strict type check, then
pydantic-core's JSON writer and reader (several times faster than the ``json`` module, and the
same parser the typed path uses). Everything else goes through a cached pydantic
``TypeAdapter``, then is read back and compared with the original.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import functools
import inspect
import json
import math
import typing
from collections.abc import Callable, Iterator
from typing import Any

import pydantic
import pydantic_core

from perdure import exceptions

_SCALARS = frozenset({str, int, bool, type(None)})
_JSON_NAMES = {dict: "dict", list: "list", str: "str", int: "int", float: "float", bool: "bool"}
_MAX_REPORTED_ERRORS = 5
# pydantic-core refuses to read JSON nested deeper than this (200 levels below the top):
# deeper values take the slow path, which reads back and so reports it when writing.
_MAX_DEPTH = 200
# Nor does it read an int of more than about 4300 digits, which it writes: a text shorter
# than this cannot hold one, so only longer ones are read back after writing.
_SHORTEST_UNREADABLE = 4000

Segment = tuple[str, Any]  # ("key", k) | ("index", i) | ("attr", name)


class Codec:
    """Validates and (de)serializes values of one type hint.

    ``what`` names the boundary in messages, e.g. ``"result of step 'fetch'"``.
    """

    def __init__(self, hint: Any, what: str) -> None:
        self.hint = hint
        self.what = what
        self._untyped = hint is Any
        self._adapter = _adapter_for(hint, what)
        # The validator itself where pydantic built one: a replay loads every recorded step
        # through it, and the adapter's wrapper adds half as much again.
        validator = self._adapter.validator
        self._validate_json = (
            validator.validate_json
            if isinstance(validator, pydantic_core.SchemaValidator)
            else self._adapter.validate_json
        )
        # Sets have no order of their own; sorting them is what makes the text deterministic.
        self._sorts_sets = not self._untyped and _mentions_set(hint, set())

    def __repr__(self) -> str:
        return f"Codec({self.hint!r}, {self.what!r})"

    def validate(self, value: Any) -> Any:
        """Python input -> the typed value (a dict given for a model becomes the model)."""
        if self._untyped:
            return value
        try:
            return self._adapter.validate_python(value)
        except pydantic.ValidationError as exc:
            raise exceptions.PayloadError(_validation_message(self.what, exc)) from exc
        except pydantic.PydanticUserError as exc:
            raise exceptions.PayloadError(f"{self.what}: {exc}") from exc

    def dump(self, value: Any) -> str:
        """The typed value as compact JSON text; PayloadError if JSON cannot carry it exactly."""
        if self._untyped and _is_plain(value):
            text = self._write_plain(value)
            if len(text) >= _SHORTEST_UNREADABLE:
                self._read_written(text)
            return text
        return self._dump_checked(value)[0]

    def load(self, text: str) -> Any:
        """JSON text -> the typed value, validated against the hint."""
        if self._untyped:
            return _loads(text, self.what)
        try:
            return self._validate_json(text)
        except pydantic.ValidationError as exc:
            raise exceptions.PayloadError(_validation_message(self.what, exc)) from exc
        except pydantic.PydanticUserError as exc:
            raise exceptions.PayloadError(f"{self.what}: {exc}") from exc

    def roundtrip(self, value: Any) -> tuple[str, Any]:
        """``(dump(value), load(dump(value)))``: what a live step hands back to its caller."""
        if self._untyped and _is_plain(value):
            text = self._write_plain(value)
            return text, self._read_written(text)
        return self._dump_checked(value)

    def _write_plain(self, value: Any) -> str:
        try:
            return _dumps(value)
        except ValueError as exc:  # a lone surrogate in a str, say
            raise exceptions.PayloadError(f"{self.what}: cannot be written as JSON: {exc}") from exc

    def _read_written(self, text: str) -> Any:
        try:
            return pydantic_core.from_json(text, allow_inf_nan=False)
        except ValueError as exc:
            raise exceptions.PayloadError(
                f"{self.what}: JSON cannot carry the value ({exc})"
            ) from exc

    def _dump_checked(self, value: Any) -> tuple[str, Any]:
        text = self._serialize(value)
        loaded = self._read_back(value, text)
        if not _equal(value, loaded):
            problem = _difference(value, loaded) or _Problem(value, loaded)
            raise exceptions.PayloadError(_problem_message(self.what, problem))
        return text, loaded

    def _serialize(self, value: Any) -> str:
        try:
            raw = self._adapter.dump_json(value, round_trip=True, warnings=False).decode()
        except Exception as exc:  # a serializer may fail in any way; the value is at fault
            raise exceptions.PayloadError(_unserializable_message(self.what, value, exc)) from exc
        return _sort_sets_in_text(value, raw) if self._sorts_sets else raw

    def _read_back(self, value: Any, text: str) -> Any:
        if self._untyped:
            return self._read_written(text)
        try:
            return self._validate_json(text)
        except pydantic.ValidationError as exc:
            # Non-finite floats are written as null: name them rather than the null.
            problem = _find(value, _is_non_finite)
            message = (
                _problem_message(self.what, problem)
                if problem
                else _validation_message(self.what, exc)
            )
            raise exceptions.PayloadError(message) from exc


def codec(hint: Any, what: str) -> Codec:
    """The Codec of ``hint`` at the boundary ``what``, cached where the hint is hashable."""
    try:
        hash((hint, what))
    except TypeError:
        return Codec(hint, what)
    return _cached_codec(hint, what)


def signature_hints(fn: Callable[..., Any]) -> tuple[Any, Any]:
    """(payload hint, return hint) of a task function taking one parameter.

    A missing annotation (or no parameter) is ``Any``; ``-> None`` is ``type(None)``.
    """
    try:
        hints = typing.get_type_hints(fn, include_extras=True)
    except NameError as exc:
        name = getattr(fn, "__qualname__", repr(fn))
        raise exceptions.ConfigurationError(
            f"the type hints of {name} cannot be resolved ({exc}); "
            "define or import the types before the function is registered"
        ) from exc
    except TypeError:  # a callable typing cannot read (a partial, say): no hints
        hints = {}
    try:
        parameters = list(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        parameters = []
    payload = hints.get(parameters[0], Any) if parameters else Any
    return payload, hints.get("return", Any)


def to_json(value: Any, what: str) -> str:
    """An untyped JSON value (metadata, tags) as compact text, with the rules of hint Any."""
    return codec(Any, what).dump(value)


def from_json(text: str | None) -> Any:
    """The value of JSON text written by ``to_json``; None stays None."""
    if text is None:
        return None
    try:
        return pydantic_core.from_json(text, allow_inf_nan=False)
    except ValueError as exc:
        raise exceptions.PayloadError(f"invalid JSON: {exc}") from exc


# --- adapters -------------------------------------------------------------------------


@functools.lru_cache(maxsize=4096)
def _cached_codec(hint: Any, what: str) -> Codec:
    return Codec(hint, what)


@functools.lru_cache(maxsize=1024)
def _cached_adapter(hint: Any) -> pydantic.TypeAdapter[Any]:
    # Building a TypeAdapter costs a schema compilation: far too slow for every step.
    return pydantic.TypeAdapter(hint)


def _adapter_for(hint: Any, what: str) -> pydantic.TypeAdapter[Any]:
    try:
        try:
            hash(hint)
        except TypeError:
            return pydantic.TypeAdapter(hint)
        return _cached_adapter(hint)
    except Exception as exc:  # pydantic raises several kinds for a type it cannot handle
        reason = str(exc).partition("\n")[0]  # pydantic's hints run to many lines
        raise exceptions.PayloadError(
            f"{what}: the type {hint!r} cannot be serialized ({reason}); use a pydantic model, "
            "a dataclass, a TypedDict, JSON types, datetimes, or lists and dicts of them"
        ) from exc


def _mentions_set(hint: Any, seen: set[int]) -> bool:
    """Whether a set can appear anywhere in values of ``hint``."""
    if id(hint) in seen:
        return False
    seen.add(id(hint))
    origin = typing.get_origin(hint) or hint
    if origin in (set, frozenset, collections.abc.Set, collections.abc.MutableSet):
        return True
    return any(_mentions_set(inner, seen) for inner in _inner_hints(hint))


def _inner_hints(hint: Any) -> list[Any]:
    args = typing.get_args(hint)
    if args:
        return list(args)
    if isinstance(hint, type) and issubclass(hint, pydantic.BaseModel):
        return [field.annotation for field in hint.model_fields.values()]
    if isinstance(hint, type) and (dataclasses.is_dataclass(hint) or typing.is_typeddict(hint)):
        try:
            return list(typing.get_type_hints(hint).values())
        except Exception:  # unresolvable hints: pydantic will have said so already
            return []
    return []


# --- the plain JSON fast path ---------------------------------------------------------


def _dumps(value: Any) -> str:
    """Compact JSON of a plain value (keys in insertion order, floats in shortest exact form)."""
    return pydantic_core.to_json(value).decode()


def _loads(text: str, what: str) -> Any:
    try:
        return pydantic_core.from_json(text, allow_inf_nan=False)
    except ValueError as exc:
        raise exceptions.PayloadError(f"{what}: invalid JSON: {exc}") from exc


def _is_plain(value: Any) -> bool:
    """Whether JSON gives back exactly ``value``, types included: dicts with str keys, lists,
    str, int, bool, None and finite floats, nested at most ``_MAX_DEPTH`` deep."""
    try:
        return _plain(value, 0)
    except RecursionError:  # called from deep down a stack: let the slow path decide
        return False


def _plain(value: Any, depth: int) -> bool:
    kind = type(value)
    if kind in _SCALARS:
        return True
    if kind is float:
        return math.isfinite(value)
    if depth >= _MAX_DEPTH:
        return False
    if kind is dict:
        for key, item in value.items():
            if type(key) is not str or (type(item) not in _SCALARS and not _plain(item, depth + 1)):
                return False
        return True
    if kind is list:
        # A loop, not all(): this runs for every step result and the generator costs more.
        for item in value:
            if type(item) not in _SCALARS and not _plain(item, depth + 1):
                return False
        return True
    return False


# --- deterministic sets ---------------------------------------------------------------


def _sort_sets_in_text(value: Any, text: str) -> str:
    return _dumps(_sort_sets(value, pydantic_core.from_json(text)))


def _sort_sets(value: Any, node: Any) -> Any:
    """The JSON ``node`` written from ``value``, with the arrays that came from sets sorted.

    Pydantic writes a set in iteration order, which changes with the hash seed of the process.
    Where ``value`` and ``node`` do not line up, ``node`` is left as it is: the comparison
    after reading back catches anything this gets wrong.
    """
    if isinstance(value, set | frozenset):
        if not isinstance(node, list) or len(node) != len(value):
            return node
        items = [_sort_sets(item, sub) for item, sub in zip(value, node, strict=True)]
        return sorted(items, key=lambda item: json.dumps(item, sort_keys=True))
    if isinstance(node, dict):
        for name, item in _named_children(value):
            if name in node:
                node[name] = _sort_sets(item, node[name])
    elif (
        isinstance(node, list)
        and isinstance(value, collections.abc.Sequence)
        and len(node) == len(value)
    ):
        return [_sort_sets(item, sub) for item, sub in zip(value, node, strict=True)]
    return node


def _named_children(value: Any) -> Iterator[tuple[str, Any]]:
    """(JSON key, child) of a model, dataclass or mapping, as pydantic writes them."""
    if isinstance(value, pydantic.BaseModel):
        # Written under its name unless the model serializes by alias: try each.
        for name, field in type(value).model_fields.items():
            for key in dict.fromkeys((name, field.serialization_alias, field.alias)):
                if key is not None:
                    yield key, getattr(value, name, None)
    elif _is_dataclass_instance(value):
        for attribute in dataclasses.fields(value):
            yield attribute.name, getattr(value, attribute.name, None)
    elif isinstance(value, collections.abc.Mapping):
        for key, item in value.items():
            yield str(key), item


# --- explaining what went wrong -------------------------------------------------------


@dataclasses.dataclass
class _Problem:
    """Where a value stops being carried exactly: ``path`` is built innermost first."""

    found: Any
    loaded: Any = None
    is_key: bool = False
    path: list[Segment] = dataclasses.field(default_factory=list)


def _equal(original: Any, loaded: Any) -> bool:
    try:
        return bool(original == loaded)
    except Exception:  # an __eq__ that raises cannot prove the values equal
        return False


def _difference(original: Any, loaded: Any) -> _Problem | None:
    """The first place where ``loaded`` differs from ``original``, walking both together."""
    if _equal(original, loaded):
        return None
    if isinstance(original, dict) and isinstance(loaded, dict):
        return _dict_difference(original, loaded)
    if type(original) is type(loaded):
        for segment, left, right in _paired_children(original, loaded):
            problem = _difference(left, right)
            if problem is not None:
                problem.path.append(segment)
                return problem
    return _Problem(original, loaded)


def _dict_difference(original: dict[Any, Any], loaded: dict[Any, Any]) -> _Problem | None:
    if len(original) != len(loaded):  # keys collapsed, e.g. 1 and "1"
        return _Problem(original, loaded)
    # JSON keeps the order of keys, so the n-th key of one is the n-th key of the other.
    for (key, item), (loaded_key, loaded_item) in zip(
        original.items(), loaded.items(), strict=True
    ):
        if type(key) is not type(loaded_key) or not _equal(key, loaded_key):
            return _Problem(key, loaded_key, is_key=True)
        problem = _difference(item, loaded_item)
        if problem is not None:
            problem.path.append(("key", key))
            return problem
    return _Problem(original, loaded)


def _paired_children(original: Any, loaded: Any) -> Iterator[tuple[Segment, Any, Any]]:
    if isinstance(original, list | tuple):
        if len(original) == len(loaded):
            for index, (left, right) in enumerate(zip(original, loaded, strict=True)):
                yield ("index", index), left, right
    elif isinstance(original, pydantic.BaseModel) or _is_dataclass_instance(original):
        for name in _attribute_names(original):
            yield ("attr", name), getattr(original, name, None), getattr(loaded, name, None)


def _attribute_names(value: Any) -> list[str]:
    if isinstance(value, pydantic.BaseModel):
        return [*type(value).model_fields, *(value.__pydantic_extra__ or {})]
    return [field.name for field in dataclasses.fields(value)]


def _children(value: Any) -> Iterator[tuple[Segment, Any]]:
    if isinstance(value, collections.abc.Mapping):
        for key, item in value.items():
            yield ("key", key), item
    elif isinstance(value, list | tuple | set | frozenset):
        for index, item in enumerate(value):
            yield ("index", index), item
    elif isinstance(value, pydantic.BaseModel) or _is_dataclass_instance(value):
        for name in _attribute_names(value):
            yield ("attr", name), getattr(value, name, None)


def _find(value: Any, predicate: Callable[[Any], bool]) -> _Problem | None:
    """The first part of ``value`` (depth first) for which ``predicate`` holds."""
    try:
        return _find_in(value, predicate)
    except RecursionError:
        return None


def _find_in(value: Any, predicate: Callable[[Any], bool]) -> _Problem | None:
    if predicate(value):
        return _Problem(value)
    for segment, child in _children(value):
        problem = _find_in(child, predicate)
        if problem is not None:
            problem.path.append(segment)
            return problem
    return None


def _is_dataclass_instance(value: Any) -> bool:
    return dataclasses.is_dataclass(value) and not isinstance(value, type)


def _is_non_finite(value: Any) -> bool:
    return isinstance(value, float) and not math.isfinite(value)


def _is_unserializable_leaf(value: Any) -> bool:
    if isinstance(value, collections.abc.Mapping | list | tuple | set | frozenset):
        return False
    if isinstance(value, pydantic.BaseModel) or _is_dataclass_instance(value):
        return False
    try:
        pydantic_core.to_json(value)
    except Exception:
        return True
    return False


def _unserializable_message(what: str, value: Any, exc: Exception) -> str:
    problem = _find(value, _is_unserializable_leaf)
    if problem is None:
        return f"{what}: cannot be written as JSON: {exc}"
    return (
        f"{what}: {_where(problem)} is {_a(_type_name(problem.found))}, which JSON cannot "
        "carry; convert it to a JSON value or annotate a type pydantic can serialize"
    )


def _problem_message(what: str, problem: _Problem) -> str:
    found, where = problem.found, _where(problem)
    if _is_non_finite(found):
        return f"{what}: {where} is the float {found!r}, which JSON cannot carry; use None or a str"
    found_name, loaded_name = _type_name(found), _type_name(problem.loaded)
    if type(found) is type(problem.loaded):
        return (
            f"{what}: {where} ({_a(found_name)}) does not come back equal from JSON; "
            "keep its state in fields that JSON carries"
        )
    if _json_made(problem):
        returned = _a(_JSON_NAMES[type(problem.loaded)]) if problem.loaded is not None else "null"
        return (
            f"{what}: {where} is {_a(found_name)}, which JSON returns as {returned}; "
            f"{_advice(problem)}"
        )
    return (
        f"{what}: {where} is {_a(found_name)} where the type hint says {loaded_name}; "
        f"convert it to {_a(loaded_name)}"
    )


def _json_made(problem: _Problem) -> bool:
    """Whether JSON itself changed the value (a tuple became a list), not the type hint."""
    loaded_kind = type(problem.loaded)
    if problem.is_key:
        return loaded_kind is str
    if loaded_kind not in _JSON_NAMES and problem.loaded is not None:
        return False
    # A str that came back an int was coerced by the hint: JSON keeps its own types.
    return type(problem.found) not in _JSON_NAMES


def _advice(problem: _Problem) -> str:
    found = problem.found
    if problem.is_key:
        return "annotate the type (e.g. dict[int, str]) or use str keys"
    if isinstance(found, tuple):
        return "annotate the type (e.g. tuple[int, ...]) or use a list"
    if isinstance(found, set | frozenset):
        return "annotate the type (e.g. set[str]) or use a list"
    if isinstance(found, bytes | bytearray):
        return "decode it to a str (base64, say)"
    if isinstance(found, pydantic.BaseModel) or _is_dataclass_instance(found):
        return f"annotate the type as {type(found).__name__} (or a type that contains it)"
    return f"annotate the type (e.g. {type(found).__name__}) or convert it to a JSON value"


def _where(problem: _Problem) -> str:
    path = "".join(_format_segment(segment) for segment in reversed(problem.path))
    if problem.is_key:
        return f"key {problem.found!r} at {path}" if path else f"key {problem.found!r}"
    return f"value at {path}" if path else "the value"


def _format_segment(segment: Segment) -> str:
    kind, part = segment
    if kind == "attr":
        return f".{part}"
    if kind == "index":
        return f"[{part}]"
    return f"[{part!r}]"


def _validation_message(what: str, error: pydantic.ValidationError) -> str:
    details = error.errors(include_url=False)
    parts = []
    for detail in details[:_MAX_REPORTED_ERRORS]:
        location = _format_location(detail["loc"])
        parts.append(f"field '{location}': {detail['msg']}" if location else detail["msg"])
    if len(details) > _MAX_REPORTED_ERRORS:
        parts.append(f"and {len(details) - _MAX_REPORTED_ERRORS} more errors")
    return f"{what}: " + "; ".join(parts)


def _format_location(location: tuple[int | str, ...]) -> str:
    text = ""
    for part in location:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else str(part)
    return text


def _type_name(value: Any) -> str:
    return type(value).__name__


def _a(noun: str) -> str:
    return f"an {noun}" if noun[:1].lower() in "aeio" else f"a {noun}"
