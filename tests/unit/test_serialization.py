"""Payloads, outputs and step results cross the durable boundary as JSON, exactly or not at all."""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import json
import random
import struct
import uuid
import zoneinfo
from typing import Any

import pydantic
import pytest
import typing_extensions

from perdure import exceptions, serialization

STEP = "result of step 'fetch'"


class Research(pydantic.BaseModel):
    topic: str
    depth: int = 1
    when: datetime.datetime | None = None
    tags: set[str] = set()


@dataclasses.dataclass
class Point:
    x: int
    y: float
    label: tuple[str, str] = ("a", "b")


class Movie(typing_extensions.TypedDict):
    title: str
    year: int


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


def roundtrip(hint: Any, value: Any) -> tuple[str, Any]:
    return serialization.codec(hint, STEP).roundtrip(value)


def payload_error(hint: Any, value: Any) -> str:
    with pytest.raises(exceptions.PayloadError) as caught:
        serialization.codec(hint, STEP).roundtrip(value)
    return str(caught.value)


# --- plain JSON under hint Any ---------------------------------------------------------


def test_plain_values_pass_through_as_compact_json() -> None:
    value = {"name": "wídget", "price": 9.99, "tags": ["a", "b"], "ok": True, "none": None}
    text, loaded = roundtrip(Any, value)
    assert text == '{"name":"wídget","price":9.99,"tags":["a","b"],"ok":true,"none":null}'
    assert loaded == value
    assert serialization.codec(Any, STEP).load(text) == value


def test_the_same_value_always_gives_the_same_text() -> None:
    value = {"b": [1, 2.5, {"c": None}], "a": "x"}
    assert serialization.to_json(value, STEP) == serialization.to_json(dict(value), STEP)
    assert serialization.to_json(value, STEP) == '{"b":[1,2.5,{"c":null}],"a":"x"}'


def test_floats_come_back_bit_for_bit() -> None:
    rng = random.Random(7)
    floats = [0.1, -0.0, 5e-324, 1.7976931348623157e308, 1e16, 1 / 3]
    floats += [struct.unpack("d", rng.getrandbits(64).to_bytes(8, "little"))[0] for _ in range(500)]
    finite = [value for value in floats if value == value and abs(value) != float("inf")]
    for hint in (Any, list[float]):
        _, loaded = roundtrip(hint, finite)
        assert [struct.pack("d", value) for value in loaded] == [
            struct.pack("d", value) for value in finite
        ]


def test_a_tuple_under_any_names_its_path_and_the_fix() -> None:
    message = payload_error(Any, [{"when": (1, 2)}])
    assert message.startswith(STEP + ": value at [0]['when'] is a tuple")
    assert "which JSON returns as a list" in message
    assert "tuple[int, ...]" in message


def test_a_set_under_any_is_refused() -> None:
    message = payload_error(Any, {"ids": {1, 2}})
    assert "value at ['ids'] is a set, which JSON returns as a list" in message


def test_int_dict_keys_under_any_are_refused() -> None:
    message = payload_error(Any, {"by_id": {1: "a"}})
    assert "key 1 at ['by_id'] is an int, which JSON returns as a str" in message


def test_int_dict_keys_under_a_bare_dict_hint_are_refused() -> None:
    assert "key 1 is an int" in payload_error(dict, {1: "a"})


def test_an_unannotated_model_is_refused() -> None:
    message = payload_error(Any, {"research": Research(topic="x")})
    assert "value at ['research'] is a Research, which JSON returns as a dict" in message
    assert "annotate the type as Research" in message


def test_an_unannotated_dataclass_is_refused() -> None:
    assert "value at [1] is a Point" in payload_error(list[Any], [1, Point(1, 2.0)])


def test_a_datetime_under_any_is_refused() -> None:
    assert "is a datetime, which JSON returns as a str" in payload_error(
        Any, datetime.datetime(2024, 1, 1)
    )


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_floats_are_refused_with_their_path(bad: float) -> None:
    assert f"value at ['scores'][1] is the float {bad!r}" in payload_error(
        Any, {"scores": [1.0, bad]}
    )
    assert f"the value is the float {bad!r}" in payload_error(float, bad)
    assert f"value at .y is the float {bad!r}" in payload_error(Point, Point(1, bad))


def test_bytes_under_any_are_refused() -> None:
    assert "is a bytes, which JSON returns as a str" in payload_error(Any, b"raw")


def test_an_object_json_cannot_write_is_a_payload_error_naming_its_path() -> None:
    class Opaque:
        pass

    assert "value at ['x'] is an Opaque, which JSON cannot carry" in payload_error(
        Any, {"x": Opaque()}
    )
    assert "value at ['x'][0] is an Opaque" in payload_error(dict[str, Any], {"x": [Opaque()]})


def test_a_cycle_is_a_payload_error() -> None:
    looped: list[Any] = []
    looped.append(looped)
    payload_error(Any, looped)


def test_nesting_json_cannot_read_back_is_refused_when_written() -> None:
    deep: list[Any] = []
    for _ in range(250):
        deep = [deep]
    with pytest.raises(exceptions.PayloadError):
        serialization.codec(Any, STEP).dump(deep)


def test_a_lone_surrogate_is_refused() -> None:
    payload_error(Any, {"text": "a\ud800"})


# --- typed values ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hint", "value"),
    [
        (tuple[int, int], (1, 2)),
        (tuple[str, ...], ("a", "b", "c")),
        (set[str], {"a", "b"}),
        (frozenset[int], frozenset({3, 1})),
        (dict[int, str], {1: "a", 2: "b"}),
        (list[tuple[int, str]], [(1, "a")]),
        (datetime.date, datetime.date(2024, 2, 29)),
        (uuid.UUID, uuid.UUID("12345678-1234-5678-1234-567812345678")),
        (decimal.Decimal, decimal.Decimal("1.10")),
        (Color, Color.BLUE),
        (int | None, None),
        (int | str, "7"),
        (Movie, {"title": "Alien", "year": 1979}),
        (Point, Point(1, 2.5, ("c", "d"))),
        (Research, Research(topic="durable", depth=3, tags={"x", "y"})),
        (list[Research], [Research(topic="a"), Research(topic="b")]),
        (type(None), None),
    ],
)
def test_a_hint_that_restores_the_type_brings_back_an_equal_value(hint: Any, value: Any) -> None:
    text, loaded = roundtrip(hint, value)
    assert loaded == value
    assert type(loaded) is type(value)
    assert serialization.codec(hint, STEP).load(text) == value


def test_a_model_comes_back_as_the_model() -> None:
    value = Research(topic="durable", tags={"b", "a"})
    text, loaded = roundtrip(Research, value)
    assert isinstance(loaded, Research)
    assert json.loads(text) == {"topic": "durable", "depth": 1, "when": None, "tags": ["a", "b"]}


def test_an_aware_datetime_keeps_its_offset() -> None:
    paris = datetime.datetime(
        2024, 7, 1, 12, 30, 15, 123456, tzinfo=zoneinfo.ZoneInfo("Europe/Paris")
    )
    text, loaded = roundtrip(datetime.datetime, paris)
    assert text == '"2024-07-01T12:30:15.123456+02:00"'
    assert loaded == paris
    assert loaded.utcoffset() == datetime.timedelta(hours=2)


def test_a_naive_datetime_stays_naive() -> None:
    naive = datetime.datetime(2024, 7, 1, 12, 30)
    _, loaded = roundtrip(datetime.datetime, naive)
    assert loaded == naive
    assert loaded.tzinfo is None


def test_sets_are_written_sorted_whatever_their_iteration_order() -> None:
    numbers = {8, 1}
    assert list(numbers) == [8, 1]  # the set's own order is not sorted
    assert roundtrip(set[int], numbers)[0] == "[1,8]"
    model = Research(topic="t", tags={"b", "c", "a"})
    assert json.loads(roundtrip(Research, model)[0])["tags"] == ["a", "b", "c"]


def test_a_value_of_the_wrong_type_names_the_field() -> None:
    message = payload_error(Research, Research.model_construct(topic=5))
    assert message == f"{STEP}: field 'topic': Input should be a valid string"


def test_a_value_the_hint_would_coerce_is_refused_with_its_path() -> None:
    message = payload_error(Research, Research.model_construct(topic="t", depth="5"))
    assert "value at .depth is a str where the type hint says int" in message


def test_a_dict_where_the_hint_says_a_model_is_refused_by_dump() -> None:
    assert "the value is a dict where the type hint says Research" in payload_error(
        Research, {"topic": "t"}
    )


def test_a_hint_pydantic_cannot_handle_is_a_payload_error() -> None:
    class Opaque:
        pass

    with pytest.raises(exceptions.PayloadError, match=r"the type .*Opaque.* cannot be serialized"):
        serialization.codec(Opaque, STEP)


# --- validate and load -------------------------------------------------------------------


def test_validate_turns_a_dict_into_the_model() -> None:
    research = serialization.codec(Research, "payload of task 'x'").validate({"topic": "t"})
    assert research == Research(topic="t")


def test_validate_names_the_missing_field() -> None:
    codec = serialization.codec(Research, "payload of task 'research-agent'")
    with pytest.raises(exceptions.PayloadError) as caught:
        codec.validate({"depth": 2})
    assert str(caught.value) == "payload of task 'research-agent': field 'topic': Field required"


def test_validate_names_a_nested_field_path() -> None:
    codec = serialization.codec(list[Research], "payload of task 'x'")
    with pytest.raises(exceptions.PayloadError, match=r"field '\[1\]\.depth': Input should be"):
        codec.validate([{"topic": "a"}, {"topic": "b", "depth": "deep"}])


def test_validate_under_any_keeps_the_value() -> None:
    value = {"a": [1]}
    assert serialization.codec(Any, STEP).validate(value) is value


def test_load_checks_the_text_against_the_hint() -> None:
    with pytest.raises(exceptions.PayloadError, match="field 'topic'"):
        serialization.codec(Research, STEP).load('{"depth": 1}')
    with pytest.raises(exceptions.PayloadError, match="invalid JSON"):
        serialization.codec(Any, STEP).load("{not json")


# --- helpers -----------------------------------------------------------------------------


def test_codecs_are_cached_per_hint_and_boundary() -> None:
    assert serialization.codec(Research, STEP) is serialization.codec(Research, STEP)
    assert serialization.codec(Research, STEP) is not serialization.codec(Research, "other")


def test_signature_hints_reads_payload_and_return_hints() -> None:
    def annotated(payload: Research) -> list[int]:
        return []

    def bare(payload):  # type: ignore[no-untyped-def]
        return None

    def returns_none(payload: int) -> None:
        return None

    assert serialization.signature_hints(annotated) == (Research, list[int])
    assert serialization.signature_hints(bare) == (Any, Any)
    assert serialization.signature_hints(returns_none) == (int, type(None))


def test_to_json_applies_the_rules_of_hint_any() -> None:
    assert serialization.to_json({"progress": 0.5}, "metadata") == '{"progress":0.5}'
    with pytest.raises(exceptions.PayloadError, match="metadata: value at \\['k'\\] is a tuple"):
        serialization.to_json({"k": (1,)}, "metadata")


def test_from_json_reads_text_and_keeps_none() -> None:
    assert serialization.from_json('{"a":[1,null]}') == {"a": [1, None]}
    assert serialization.from_json(None) is None
