"""Typed config sections: the field helper, value checks, and the strict JSON-to-dataclass builder.

Each package declares its own frozen section with :func:`opt` fields (a default, one line of
documentation, an optional check); the application composes the sections into one config.
Building is strict: an unknown key or a bad value raises :class:`ConfigError` naming the
dotted key, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import field
from pathlib import Path
from typing import Any, Literal

from klinestore.core.errors import ConfigError, InvalidInterval, InvalidSymbol
from klinestore.core.intervals import check_interval
from klinestore.core.symbols import check_symbol

Check = Callable[[Any], "str | None"]


def opt(default: Any, doc: str, check: Check | None = None) -> Any:
    """A config field: its default, one line of documentation, and an optional check."""
    if isinstance(default, (list, dict, set)):
        raise TypeError("mutable defaults are not allowed; use tuples")
    return field(default=default, metadata={"doc": doc, "check": check})


def sub(cls: type, doc: str) -> Any:
    """A nested section."""
    return field(default_factory=cls, metadata={"doc": doc, "check": None})


#: Upper bounds of the open-ended checks: a duration (seconds) well below a year, a count far
#: beyond any real setting but one the machine can still hold (and a timer can still add).
MAX_SECONDS = 30 * 86_400.0
MAX_COUNT = 10**9


def _upper(value: float) -> str | None:
    if isinstance(value, float) and value > MAX_SECONDS:
        return f"must be at most {MAX_SECONDS:g} seconds (30 days)"
    if isinstance(value, int) and value > MAX_COUNT:
        return f"must be at most {MAX_COUNT:,}"
    return None


def positive(value: float) -> str | None:
    return (None if value > 0 else "must be > 0") or _upper(value)


def non_negative(value: float) -> str | None:
    return (None if value >= 0 else "must be >= 0") or _upper(value)


def fraction(value: float) -> str | None:
    return None if 0 <= value < 1 else "must be in [0, 1)"


def between(low: float, high: float) -> Check:
    def check(value: float) -> str | None:
        return None if low <= value <= high else f"must be between {low} and {high}"

    return check


def intervals(value: tuple[str, ...]) -> str | None:
    try:
        for item in value:
            check_interval(item)
    except InvalidInterval as exc:
        return str(exc)
    return None if len(set(value)) == len(value) else "has duplicates"


def symbols(value: tuple[str, ...]) -> str | None:
    try:
        canonical = [check_symbol(item) for item in value]
    except InvalidSymbol as exc:
        return str(exc)
    if canonical != list(value):
        return "symbols must be uppercase"
    return None if len(set(value)) == len(value) else "has duplicates"


def route(value: str) -> str | None:
    return None if value.startswith("/") and "?" not in value and " " not in value else "must start with /"


def url(schemes: tuple[str, ...]) -> Check:
    def check(value: str) -> str | None:
        return None if value.split("://", 1)[0] in schemes and "://" in value else f"must be a {'/'.join(schemes)} URL"

    return check


# --- building ----------------------------------------------------------------------------------


def read_json(path: Path) -> Mapping[str, Any]:
    """A config file's JSON object; unreadable or invalid files raise :class:`ConfigError`."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError("", f"cannot read {path}: {exc.strerror}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError("", f"{path} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None


def to_dict(config: Any) -> dict[str, Any]:
    """A section as plain JSON-able data (tuples become lists)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            out[f.name] = to_dict(value)
        elif isinstance(value, tuple):
            out[f.name] = list(value)
        else:
            out[f.name] = value
    return out


def reference(cls: type, prefix: str = "") -> list[tuple[str, str, Any, str]]:
    """Every leaf key as ``(dotted key, type, default, doc)``: the README's reference table."""
    rows: list[tuple[str, str, Any, str]] = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            rows.extend(reference(tp, key + "."))
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        rows.append((key, type_name(tp), default, f.metadata.get("doc", "")))
    return rows


def build(cls: type, data: Mapping[str, Any], prefix: str = "") -> Any:
    """An instance of the section ``cls`` from parsed JSON, strictly (``prefix`` names its keys)."""
    if not isinstance(data, Mapping):
        raise ConfigError(prefix.rstrip("."), f"expected an object, got {_json_type(data)}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    for key in data:
        if key not in fields:
            near = difflib.get_close_matches(str(key), fields, n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else f"; known keys: {', '.join(fields)}"
            raise ConfigError(f"{prefix}{key}", f"unknown key{hint}")
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        key = f"{prefix}{name}"
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            if not isinstance(value, Mapping):
                raise ConfigError(key, f"expected an object, got {_json_type(value)}")
            kwargs[name] = build(tp, value, key + ".")
            continue
        converted = _convert(tp, value, key)
        check = fields[name].metadata.get("check")
        problem = check(converted) if check else None
        if problem:
            raise ConfigError(key, f"{problem} (got {value!r})")
        kwargs[name] = converted
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        if prefix and not exc.key.startswith(prefix):
            raise ConfigError(prefix + exc.key, str(exc).split(": ", 1)[-1]) from None
        raise


def _convert(tp: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            if abs(value) > 2**63 - 1:
                raise ConfigError(key, f"is far out of range (got {str(value)[:40]}...)")
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                number = float(value)
            except OverflowError:  # an integer beyond any double
                number = math.inf
            if not math.isfinite(number):
                raise ConfigError(key, f"must be a finite number, got {value!r:.40}")
            return number
    elif tp is str:
        if isinstance(value, str):
            return value
    elif origin is Literal:
        choices = typing.get_args(tp)
        if value in choices and type(value) in {type(c) for c in choices}:
            return value
        raise ConfigError(key, f"expected one of {', '.join(map(repr, choices))}, got {value!r}")
    elif origin is tuple:
        (item,) = typing.get_args(tp)[:1]
        if isinstance(value, list):
            return tuple(_convert(item, v, f"{key}[{i}]") for i, v in enumerate(value))
        raise ConfigError(key, f"expected a list, got {_json_type(value)}")
    elif origin in (typing.Union, types.UnionType):
        for option in typing.get_args(tp):
            if option is type(None) and value is None:
                return None
        inner = [o for o in typing.get_args(tp) if o is not type(None)]
        return _convert(inner[0], value, key)
    else:  # pragma: no cover - a schema bug, not a user error
        raise TypeError(f"unsupported config type {tp!r} at {key}")
    raise ConfigError(key, f"expected {type_name(tp)}, got {_json_type(value)} {value!r}")


def type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(json.dumps(c) for c in typing.get_args(tp))
    if origin is tuple:
        return f"list of {type_name(typing.get_args(tp)[0])}"
    if origin in (typing.Union, types.UnionType):
        return " or ".join("null" if o is type(None) else type_name(o) for o in typing.get_args(tp))
    return {bool: "boolean", int: "integer", float: "number", str: "string"}.get(tp, str(tp))


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    if value is None:
        return "null"
    return "object"
