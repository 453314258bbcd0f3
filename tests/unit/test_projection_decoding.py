"""`projections.decoding`: the fast path reads a progress event exactly as the contract does.

`decode_okr_event` skips the pydantic models for the common shape of a `KpiProgressRecorded`. A
fast path that accepted a message the models refuse would project a forged or corrupt event
instead of setting it aside; one that read a field differently would store another value or
moment. So every generated message is read both ways: the fast path may decline (the models
then decide), never disagree. Messages start from valid envelopes and have one or more fields
replaced by values on both sides of the models' rules, dropped, doubled or joined by others.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import orjson
from hypothesis import event, given, settings
from hypothesis import strategies as st

from events import okr
from projections.decoding import ProgressRecorded, _fast_progress, decode_okr_event
from tests.json_support import JsonText, fragment

START = datetime(2026, 7, 1, 9, 0, tzinfo=UTC)


def model_reading(raw: bytes) -> tuple[okr.OkrEventEnvelope, okr.OkrPayload] | None:
    try:
        return okr.parse_okr_event(raw)
    except ValueError:
        return None


def spelled(value: Any) -> tuple[type, str]:
    """Type and repr: floats then differ by the sign of zero, text exactly."""
    return type(value), repr(value)


def assert_agrees_with_the_models(raw: bytes, *, counted: bool = True) -> None:
    expected = model_reading(raw)
    fast = _fast_progress(raw)
    if counted:
        event("fast path" if fast is not None else "models accept" if expected else "refused")
    if fast is None:
        decoded = decode_okr_event(raw) if expected is not None else None
        assert decoded is None or not isinstance(decoded, ProgressRecorded)
        return
    assert expected is not None, f"fast path accepts what the models refuse: {raw!r} {fast}"
    envelope, payload = expected
    assert isinstance(payload, okr.KpiProgressRecorded)
    assert fast.occurred_at == envelope.occurred_at
    assert fast.occurred_at.utcoffset() == envelope.occurred_at.utcoffset()
    assert [
        spelled(v)
        for v in (
            fast.objective_id,
            fast.version,
            fast.actor,
            fast.command_id,
            fast.reason,
            fast.key_result_id,
            fast.value,
        )
    ] == [
        spelled(v)
        for v in (
            envelope.objective_id,
            envelope.version,
            envelope.actor,
            envelope.command_id,
            envelope.reason,
            payload.key_result_id,
            payload.value,
        )
    ], raw
    assert {k: spelled(v) for k, v in fast.detail.items()} == {
        name: spelled(getattr(payload, name))
        for name in payload.timeline.detail  # type: ignore[union-attr]
    }
    assert decode_okr_event(raw) == fast


def valid_envelope(draw: st.DrawFn) -> dict[str, Any]:
    payload = okr.KpiProgressRecorded(
        key_result_id=UUID(int=draw(st.integers(0, 2**128 - 1))),
        value=draw(st.floats(allow_nan=False, allow_infinity=False)),
        kpi_key=draw(st.sampled_from(["sales.units", "nps", "a:b/c-d_e.f", "x" * 200])),
        observations=draw(st.integers(1, 2**40)),
        last_kpi_event_id=draw(st.text(max_size=20)),
        last_offset=draw(st.none() | st.integers(0, 2**62)),
    )
    header = okr.EventHeader(
        objective_id=UUID(int=draw(st.integers(0, 2**128 - 1))),
        version=draw(st.integers(1, 2**62)),
        occurred_at=START + timedelta(microseconds=draw(st.integers(0, 10**13))),
        actor=draw(st.text(max_size=20)),
        command_id=draw(st.text(max_size=20)),
        reason=draw(st.none() | st.text(max_size=20)),
        chain_hash=draw(st.none() | st.just("ab" * 32)),
    )
    envelope = okr.okr_event(payload, header)
    return orjson.loads(envelope.to_bytes())


NUMBERS = [
    JsonText(text) for text in ["-0", "-0.0", "1e400", "-1e400", "1E2", "5e-324", "1" + "0" * 30]
]
MOMENTS = [
    "2026-07-01T09:00:00Z", "2026-07-01T09:00:00.123456+02:00", "2026-07-01T09:00:00",
    "2026-07-01 09:00:00Z", "2026-07-01T09:00:00.1234567Z", "2026-07-01T24:00:00Z",
    "2026-02-30T09:00:00Z", "2026-07-01T09:00:00+24:00", "2026-07-01T09:00:00-23:59",
    "2026-07-01T09:00:60Z", "2026-07-01T09:00:00z", "2026-07-01T09:00Z", "0000-01-01T00:00:00Z",
    "9999-12-31T23:59:59.999999-01:00", "2026-07-01T09:00:00+00:00\n", "1782896400",
]  # fmt: skip
ODD = [
    None, True, 0, -1, 1.5, "", "x", [], {},
    JsonText("NaN"), JsonText('"\\ud800"'), JsonText('"a\\u0000"'),
    *NUMBERS, "sales units", "sales.units\n", "é", "x" * 201, "AB" * 32, "ab" * 31, "ab" * 33,
    "00000000-0000-0000-0000-00000000000", "{00000000-0000-0000-0000-000000000000}",
    "urn:uuid:00000000-0000-0000-0000-000000000000", "00000000000000000000000000000000",
    "KpiProgressRecorded", "ProgressCheckedIn", 2, 2**63, JsonText(str(2**64)), *MOMENTS,
]  # fmt: skip
ENVELOPE_FIELDS = [
    "event_id", "type", "schema_version", "objective_id", "version", "occurred_at", "actor",
    "command_id", "reason", "chain_hash", "payload",
]  # fmt: skip
ODD_VALUES = st.sampled_from(ODD).map(copy.deepcopy)
"""A fresh copy each time: a drawn `{}` may become the payload and be written into later, and
the shared one would carry that into every later example (until it holds itself)."""
PAYLOAD_FIELDS = [
    "key_result_id", "value", "kpi_key", "observations", "last_kpi_event_id", "last_offset",
]  # fmt: skip


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    message: dict[str, Any] = valid_envelope(draw)
    for _ in range(draw(st.integers(0, 3))):
        inside = draw(st.booleans())
        payload = message.get("payload")
        target = payload if inside and isinstance(payload, dict) else message
        name = draw(st.sampled_from(PAYLOAD_FIELDS if target is not message else ENVELOPE_FIELDS))
        change = draw(st.sampled_from(["replace", "drop", "extra", "double"]))
        if change == "replace":
            target[name] = draw(ODD_VALUES)
        elif change == "drop":
            target.pop(name, None)
        elif change == "extra":
            target[f"{name}_too"] = 1
        else:  # the same member twice: JSON readers keep the last
            target[JsonText(f'"{name}"')] = draw(ODD_VALUES)
    return fragment(message).encode()


@settings(max_examples=3000)
@given(raw=mutated())
def test_the_fast_path_never_disagrees_with_the_models(raw: bytes) -> None:
    assert_agrees_with_the_models(raw)


@given(raw=st.builds(lambda d: fragment(d).encode(), st.builds(dict)) | st.binary(max_size=40))
def test_anything_else_is_left_to_the_models(raw: bytes) -> None:
    assert_agrees_with_the_models(raw)


def test_the_relays_messages_take_the_fast_path() -> None:
    payload = okr.KpiProgressRecorded(
        key_result_id=UUID(int=1),
        value=-0.0,
        kpi_key="nps",
        observations=3,
        last_kpi_event_id="kpi-1",
    )
    header = okr.EventHeader(
        objective_id=UUID(int=2),
        version=7,
        occurred_at=START,
        actor="okr-scorer",
        command_id="c",
        chain_hash="0" * 64,
    )
    raw = okr.okr_event(payload, header).to_bytes()

    decoded = _fast_progress(raw)

    assert decoded is not None
    assert_agrees_with_the_models(raw, counted=False)
    assert str(decoded.value) == "-0.0"
