"""JSON written by hand, for the decoders' differential tests: what orjson cannot emit (NaN,
1e400, duplicate keys, escaped surrogates), or emits only one way."""

from __future__ import annotations

from dataclasses import dataclass

import orjson


@dataclass(frozen=True)
class JsonText:
    """A JSON value spelled by hand."""

    text: str


def fragment(value: object) -> str:
    """The JSON text of a value, hand-spelled parts included (nested too)."""
    if isinstance(value, JsonText):
        return value.text
    if isinstance(value, dict):
        return "{" + ",".join(f"{fragment(k)}:{fragment(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(fragment(item) for item in value) + "]"
    return orjson.dumps(value).decode()
