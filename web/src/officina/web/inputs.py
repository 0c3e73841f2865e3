"""Parsing request input into checked values; every problem is an ``Invalid`` naming the field."""
from __future__ import annotations

from typing import Any

from flask import request

from officina.platform.errors import Invalid

_MISSING = object()


def json_body(*, required: tuple[str, ...] = (), optional: tuple[str, ...] = ()) -> dict[str, Any]:
    """The request's JSON object, refusing malformed JSON, missing and unknown fields."""
    if not request.data and required:
        raise Invalid("request body must be a JSON object", body="missing")
    if not request.data:
        return {}
    if not request.is_json:
        raise Invalid("request body must be JSON (Content-Type: application/json)", body="not json")
    data = request.get_json(silent=True)
    if data is None:
        raise Invalid("request body is not valid JSON", body="malformed")
    if not isinstance(data, dict):
        raise Invalid("request body must be a JSON object", body="not an object")
    unknown = sorted(set(data) - set(required) - set(optional))
    if unknown:
        raise Invalid(f"unknown field(s): {', '.join(unknown)}", **{name: "unknown field" for name in unknown})
    missing = [name for name in required if name not in data]
    if missing:
        raise Invalid(f"missing field(s): {', '.join(missing)}", **{name: "required" for name in missing})
    return data


def field(data: dict, name: str, kind: type | tuple[type, ...], default: Any = _MISSING) -> Any:
    """``data[name]`` checked to be of ``kind`` (bool is never accepted as a number)."""
    value = data.get(name, default)
    if value is _MISSING:
        raise Invalid(f"missing field: {name}", **{name: "required"})
    if value is default and default is not _MISSING:
        return value
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds:
        raise Invalid(f"field {name} must be {_names(kinds)}", **{name: "wrong type"})
    if not isinstance(value, kinds):
        raise Invalid(f"field {name} must be {_names(kinds)}", **{name: "wrong type"})
    return value


def _names(kinds: tuple[type, ...]) -> str:
    words = {str: "a string", int: "an integer", float: "a number", bool: "true or false",
             dict: "an object", list: "a list", type(None): "null"}
    return " or ".join(words.get(k, k.__name__) for k in kinds)


def int_arg(name: str, default: int | None = None) -> int | None:
    """A non-negative integer query parameter (``default`` when absent)."""
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    if not raw.isdigit():
        raise Invalid(f"{name} must be a non-negative integer", field=name)
    return int(raw)


def json_value() -> Any:
    """The request's JSON body, any JSON value (the service checks its shape)."""
    if not request.is_json:
        raise Invalid("request body must be JSON (Content-Type: application/json)", body="not json")
    body = request.get_json(silent=True)
    if body is None:
        raise Invalid("request body is not valid JSON", body="malformed")
    return body
