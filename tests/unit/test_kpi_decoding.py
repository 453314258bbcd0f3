"""`services.scoring.decoding`: the fast path reads exactly what the contract model reads.

`decode_kpi_event` skips the pydantic model for the common shape of a KPI event. A fast path that
accepted a message the model refuses would score a broken event instead of dead-lettering it; one
that read a field differently would score another number or time. So every generated message is
read both ways: the fast path may decline (the model then decides), never disagree. The
strategies sit on both sides of every rule of `events.kpi.KpiEvent`, and write the JSON by hand
where orjson cannot (NaN, 1e400, -0, huge integers, duplicate keys, escaped surrogates).
"""

from __future__ import annotations

import string
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from msgspec.structs import astuple, replace
from pydantic import ValidationError

from events.kpi import KpiEvent
from services.scoring.decoding import (
    KpiReading,
    NotAKpiEventError,
    _fast_reading,
    decode_kpi_event,
    reading_of,
)
from tests.json_support import JsonText, fragment

# --- the check ---------------------------------------------------------------------------------


def model_reading(raw: bytes) -> KpiReading | None:
    """What the contract makes of the bytes: the reading, or None when it refuses them."""
    try:
        return reading_of(KpiEvent.model_validate_json(raw))
    except ValidationError:
        return None


def spelled(reading: KpiReading) -> list[tuple[type, str]]:
    """Each field's type and repr: floats then differ by the sign of zero, text exactly, but for
    `observed_at`, which the fast path keeps in the producer's spelling: the same moment and
    offset as the model's (the store reads it back with `fromisoformat`)."""
    moment = datetime.fromisoformat(reading.observed_at).isoformat()
    return [(type(field), repr(field)) for field in astuple(replace(reading, observed_at=moment))]


def assert_agrees_with_the_model(raw: bytes) -> None:
    expected = model_reading(raw)
    fast = _fast_reading(raw)
    event("fast path" if fast is not None else "model accepts" if expected else "refused")
    if fast is not None:
        assert expected is not None, f"fast path accepts what the model refuses: {raw!r} {fast}"
        assert spelled(fast) == spelled(expected), f"{raw!r}: fast {fast} model {expected}"
    try:
        decoded = decode_kpi_event(raw)
    except NotAKpiEventError as refusal:
        assert expected is None, f"refused ({refusal}) what the model accepts: {raw!r}"
    else:
        assert expected is not None, f"decoded what the model refuses: {raw!r} {decoded}"
        assert spelled(decoded) == spelled(expected), f"{raw!r}: {decoded} model {expected}"


# --- JSON written by hand ----------------------------------------------------------------------


class _Absent:
    """A field left out of the message."""


ABSENT = _Absent()


def hand_spelled(value: object) -> bool:
    if isinstance(value, JsonText):
        return True
    if isinstance(value, dict):
        return any(hand_spelled(item) for item in value.values())
    if isinstance(value, list):
        return any(hand_spelled(item) for item in value)
    return False


def escaped_key(name: str) -> str:
    """A member name with every character as a \\u escape: the same name to a JSON reader."""
    return '"' + "".join(f"\\u{ord(char):04x}" for char in name) + '"'


# --- field values: the valid side and the edges of each rule -----------------------------------

NOTABLE = ["a", "é", "😀", "\u05d0", "\u0627", "\u202e", "\u0663", "\x00", " ", "\n"]
"""ASCII, accented, astral (two UTF-16 units), Hebrew and Arabic (RTL), the RTL override, an
Arabic-Indic digit, NUL, blanks."""
OTHER_ZEROS = ["\u0660", "\uff10", "\u0966"]
"""Arabic-Indic, fullwidth and Devanagari zero: digits to `int()`, not to `[0-9]`."""


def repeated(lengths: list[int], chars: list[str] = NOTABLE) -> st.SearchStrategy[str]:
    """One character repeated, at the lengths around a limit."""
    return st.builds(lambda char, n: char * n, st.sampled_from(chars), st.sampled_from(lengths))


def no_nul(text: str) -> bool:
    return "\x00" not in text


with_nul = st.text(max_size=20).map(lambda text: text + "\x00" + text)
escapes = st.sampled_from(
    [
        JsonText('"\\ud800"'),  # lone high surrogate
        JsonText('"a\\udc00b"'),  # lone low surrogate
        JsonText('"\\ud83d"'),
        JsonText('"\\ud83d\\ude00"'),  # a pair: one astral character
        JsonText('"\\u0000"'),
        JsonText('"x\\u0000"'),
        JsonText('"\\u00e9\\u05d0"'),
        JsonText('"\\/\\"\\\\\\n"'),
    ]
)
not_strings = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-10, 10),
    st.floats(allow_nan=False, allow_infinity=False),
    st.lists(st.integers(0, 3), max_size=2),
    st.dictionaries(st.text(max_size=3), st.text(max_size=3), max_size=2),
)

rtl_text = st.text(st.characters(min_codepoint=0x590, max_codepoint=0x6FF), min_size=1)
astral_text = st.text(st.characters(min_codepoint=0x1F600, max_codepoint=0x1F64F), min_size=1)
valid_short_texts = st.one_of(
    st.text(min_size=1, max_size=200).filter(no_nul),
    rtl_text.filter(lambda text: len(text) <= 200),
    astral_text.filter(lambda text: len(text) <= 200),
    repeated([1, 199, 200], [char for char in NOTABLE if char != "\x00"]),
)
short_text_edges = st.one_of(
    repeated([0, 1, 199, 200, 201]), with_nul, escapes, not_strings, st.just(ABSENT)
)

KEY_CHARS = string.ascii_letters + string.digits + "_.:-/"
valid_keys = st.one_of(
    st.text(KEY_CHARS, min_size=1, max_size=200),
    st.sampled_from(["sales.product_x.units", "nps", "a:b/c-d_e.f", "a" * 200, "9" * 200]),
)
NEAR_KEY_CHARS = list(" \t\n\r\x00é\u0663\uff10\uff41ßİ\u212a\ufb01+#\\[]^$|*?")
"""Non-ASCII digits and letters (Arabic-Indic 3, fullwidth 0 and a, Kelvin sign, fi
ligature...), blanks, NUL and regex metacharacters."""
key_edges = st.one_of(
    valid_keys.map(lambda key: key + "\n"),
    st.builds(
        lambda key, char, at: key[:at] + char + key[at:],
        valid_keys,
        st.sampled_from(NEAR_KEY_CHARS),
        st.integers(0, 200),
    ),
    st.sampled_from(["", "a" * 201, "\u0663", "\u0663\u0664", "x\n", "\nx"]),
    escapes,
    not_strings,
    st.just(ABSENT),
)

NUMBERS = [
    "-0", "-0.0", "0.0", "0e0", "-0e0", "-0E-0", "1E+2", "1e-0", "1e308", "-1e308",
    "1.7976931348623157e308", "1.7976931348623159e308", "5e-324", "2.4703282292062327e-324",
    "1e-400", "-1e-400", "1e400", "-1e400", "9007199254740993", "-9007199254740993",
    "9007199254740993.0", "9007199254740993.00000000000000000001", "18446744073709551616",
    "18446744073709553665", "123456789012345678901234567890", "-123456789012345678901234567890",
    "1" + "0" * 400,
]  # fmt: skip
"""JSON numbers beyond what orjson writes: exact ties, overflow, underflow, signed zeros."""
NOT_NUMBERS = [
    "NaN", "-NaN", "Infinity", "-Infinity", "01", "-01", "1.", ".5", "+1", "1e", "--1", "0x10",
    "1_000", "\u0661",
]  # fmt: skip
"""Near-numbers JSON refuses."""

number_texts = st.one_of(
    st.sampled_from(NUMBERS),
    st.from_regex(r"-?(0|[1-9][0-9]{0,25})(\.[0-9]{1,25})?([eE][+-]?[0-9]{1,3})?", fullmatch=True),
    st.integers(-(10**40), 10**40).map(str),
    st.integers(2**53 - 3, 2**53 + 3).flatmap(lambda n: st.sampled_from([str(n), f"-{n}"])),
).map(JsonText)
valid_values = st.one_of(
    st.integers(-(2**53), 2**53),
    st.integers(2**53 - 3, 2**53 + 3),
    st.integers(-(2**53) - 3, -(2**53) + 3),
    st.floats(allow_nan=False, allow_infinity=False),
    number_texts,
)
value_edges = st.one_of(
    st.integers(-(2**63), 2**64 - 1),
    number_texts,
    st.sampled_from(NOT_NUMBERS).map(JsonText),
    st.booleans(),
    st.none(),
    st.sampled_from(["1", "1.5", "NaN", ""]),
    st.lists(st.floats(allow_nan=False), max_size=1),
    st.just(ABSENT),
)


def spelled_offset(sign: str, hours: int, minutes: int) -> str:
    return f"{sign}{hours:02d}:{minutes:02d}"


@st.composite
def timestamps(draw: st.DrawFn, loose: bool) -> str:
    """ISO 8601 texts from their parts: in range when not `loose`, else past every limit and
    in other spellings (lowercase, a space, no offset, offset without colon, other digits)."""
    year = draw(st.one_of(st.integers(0 if loose else 1, 9999), st.sampled_from([1, 2, 9999])))
    month = draw(st.integers(0, 13) if loose else st.integers(1, 12))
    day = draw(st.integers(0, 32) if loose else st.one_of(st.integers(1, 28), st.integers(29, 31)))
    hour = draw(st.integers(0, 25) if loose else st.integers(0, 23))
    minute = draw(st.integers(0, 61) if loose else st.integers(0, 59))
    second = draw(st.integers(0, 61) if loose else st.integers(0, 59))
    digits = draw(st.text("0123456789", max_size=9 if loose else 6))
    point = draw(st.sampled_from([".", ","])) if loose else "."
    fraction = f"{point}{digits}" if digits or (loose and draw(st.booleans())) else ""
    hours = draw(st.integers(0, 25) if loose else st.integers(0, 23))
    minutes = draw(st.integers(0, 99) if loose else st.integers(0, 59))
    sign = draw(st.sampled_from(["+", "-"]))
    offset = draw(
        st.sampled_from(["Z", spelled_offset(sign, hours, minutes), "+23:59", "-23:59", "-00:00"])
    )
    separator = "T"
    if loose:
        offset = draw(
            st.sampled_from([offset, "z", "", "+0000", "+00", "UTC", " Z", "+24:00", "-24:00"])
        )
        separator = draw(st.sampled_from(["T", "t", " ", "_"]))
    text = (
        f"{year:04d}-{month:02d}-{day:02d}{separator}{hour:02d}:{minute:02d}:{second:02d}"
        f"{fraction}{offset}"
    )
    if loose and draw(st.booleans()):
        at = draw(st.sampled_from([i for i, char in enumerate(text) if char.isdigit()]))
        zero = draw(st.sampled_from(OTHER_ZEROS))
        text = text[:at] + chr(ord(zero) + int(text[at])) + text[at + 1 :]
    return text


any_offset = st.integers(-1439, 1439).map(lambda minutes: timezone(timedelta(minutes=minutes)))
aware_datetimes = st.datetimes(
    min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=any_offset
).map(lambda moment: moment.isoformat().replace("+00:00", "Z"))
LIMIT_TIMES = [
    "0001-01-02T00:00:00Z", "0001-01-02T00:00:00-23:59", "0002-01-01T00:00:00+23:59",
    "9999-12-30T00:00:00Z", "9999-12-29T00:00:00-23:59", "9999-12-30T00:00:00+23:59",
    "2024-02-29T12:00:00Z", "2026-07-01T00:00:00.000001-00:00", "2026-07-01T00:00:00.5+05:30",
]  # fmt: skip
"""Valid, at the limits of the range and of the spelling."""
PAST_LIMIT_TIMES = [
    "0001-01-01T00:00:00Z", "0001-01-01T23:59:59.999999Z", "0001-01-02T00:00:00+00:01",
    "9999-12-30T00:00:00-00:01", "9999-12-30T00:00:00.000001Z", "9999-12-31T23:59:59Z",
    "2023-02-29T12:00:00Z", "2026-02-30T00:00:00Z", "2026-13-01T00:00:00Z",
    "2026-07-01T24:00:00Z", "2026-06-30T23:59:60Z", "2026-07-01T00:00:00+05:60",
    "2026-07-01T00:00:00+00:99", "2026-07-01T00:00:00", "2026-07-01", "2026-07-01T00:00Z",
    "2026-07-01T00:00:00.123456789Z", "2026-07-01T00:00:00+24:00",
]  # fmt: skip
"""Past a limit of the range or of the fast path's spelling (the model reads some of them)."""
valid_times = st.one_of(timestamps(loose=False), aware_datetimes, st.sampled_from(LIMIT_TIMES))
time_edges = st.one_of(
    timestamps(loose=True),
    st.sampled_from(PAST_LIMIT_TIMES),
    st.integers(0, 2**40),
    st.floats(0, 2e9),
    st.none(),
    st.just(ABSENT),
)

valid_units = st.one_of(
    st.just(ABSENT),
    st.none(),
    st.text(max_size=100).filter(no_nul),
    repeated([0, 99, 100], [char for char in NOTABLE if char != "\x00"]),
)
unit_edges = st.one_of(repeated([0, 100, 101]), with_nul, escapes, not_strings)

valid_names = st.one_of(st.text(min_size=1, max_size=100).filter(no_nul), repeated([1, 100]))
name_edges = st.one_of(repeated([0, 1, 100, 101]), with_nul)
valid_labels = st.one_of(st.text(max_size=200).filter(no_nul), repeated([0, 200]))
label_edges = st.one_of(
    repeated([0, 200, 201]),
    with_nul,
    escapes,
    not_strings,
    st.dictionaries(st.text(max_size=3), st.text(max_size=3), min_size=1, max_size=2),
)


@st.composite
def dimension_maps(draw: st.DrawFn, loose: bool) -> object:
    """Labels up to (and, when `loose`, past) 50 entries, names and values at their limits."""
    names = st.one_of(valid_names, name_edges) if loose else valid_names
    labels = st.one_of(valid_labels, label_edges) if loose else valid_labels
    dimensions: dict[str, object] = draw(st.dictionaries(names, labels, max_size=4))
    size = draw(st.sampled_from([0, 49, 50, 51] if loose else [0, 49, 50]))
    for index in range(len(dimensions), size):
        dimensions[f"dim.{index}"] = f"v{index}"
    return dimensions


valid_dimensions = st.one_of(st.just(ABSENT), dimension_maps(loose=False))
dimension_edges = st.one_of(
    dimension_maps(loose=True),
    st.none(),
    st.sampled_from([[], "", "{}", 0]),
    st.dictionaries(st.text(max_size=3), st.none() | st.integers(-9, 9), min_size=1, max_size=2),
)

VALID: dict[str, st.SearchStrategy[object]] = {
    "schema_version": st.sampled_from([ABSENT, 1]),
    "event_id": valid_short_texts,
    "kpi_key": valid_keys,
    "value": valid_values,
    "observed_at": valid_times,
    "source": valid_short_texts,
    "unit": valid_units,
    "dimensions": valid_dimensions,
}
EDGES: dict[str, st.SearchStrategy[object]] = {
    "schema_version": st.sampled_from(
        [JsonText("1.0"), JsonText("1e0"), JsonText("-0"), True, False, 0, 2, "1", None]
    ),
    "event_id": short_text_edges,
    "kpi_key": key_edges,
    "value": value_edges,
    "observed_at": time_edges,
    "source": short_text_edges,
    "unit": unit_edges,
    "dimensions": dimension_edges,
}
UNKNOWN_FIELDS = ["extra", "Event_id", "eventId", "", "event_id ", "event_id\x00", "value\u0301"]

# --- whole messages ----------------------------------------------------------------------------

Members = list[tuple[str, object]]


@st.composite
def members(draw: st.DrawFn) -> Members:
    """The fields of a message, at most two of them off the valid side, maybe an unknown one,
    in any order, maybe one given twice (JSON allows duplicate names; readers keep the last)."""
    broken = draw(st.permutations(list(VALID)))[: draw(st.sampled_from([0, 0, 1, 1, 2]))]
    fields = [(name, draw(EDGES[name] if name in broken else VALID[name])) for name in VALID]
    present: Members = [(name, value) for name, value in fields if value is not ABSENT]
    if draw(st.integers(0, 9)) == 0:
        present.append((draw(st.sampled_from(UNKNOWN_FIELDS)), draw(not_strings)))
    ordered = draw(st.permutations(present))
    if ordered and draw(st.integers(0, 4)) == 0:
        name = draw(st.sampled_from([name for name, _ in ordered]))
        twin = draw(st.one_of(VALID.get(name, not_strings), EDGES.get(name, not_strings)))
        if twin is not ABSENT:
            ordered.insert(draw(st.integers(0, len(ordered))), (name, twin))
    return ordered


BLANKS = ["", " ", "\n", "\t ", "\r\n", "\u00a0", "\x0c"]
"""JSON whitespace, and two blanks that are not (no-break space, form feed)."""


@st.composite
def messages(draw: st.DrawFn) -> bytes:
    """A message's bytes: orjson's spelling of a dict when it can write it, else by hand."""
    fields = draw(members())
    names = [name for name, _ in fields]
    can_dump = len(set(names)) == len(names) and not any(hand_spelled(v) for _, v in fields)
    if can_dump and draw(st.booleans()):
        return orjson.dumps(dict(fields))
    blank = draw(st.sampled_from(BLANKS)) if draw(st.integers(0, 4)) == 0 else ""
    escaped = draw(st.sampled_from(names)) if names and draw(st.integers(0, 9)) == 0 else None
    written = [
        f"{escaped_key(name) if name == escaped else fragment(name)}{blank}:{blank}{fragment(v)}"
        for name, v in fields
    ]
    return f"{blank}{{{blank}{f'{blank},{blank}'.join(written)}{blank}}}{blank}".encode()


DAMAGE = [
    b"\xff", b"\xc3", b"\xc0\x80", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\x00", b'"', b"\\",
    b",", b"}", b"{", b"0", b"-", b"e", b".", b"Z", b":", b" ", b"\xef\xbb\xbf",
]  # fmt: skip
"""Invalid UTF-8 (a lone byte, a cut sequence, an overlong NUL, an encoded surrogate, past
U+10FFFF), NUL, JSON punctuation and the characters numbers and times are made of, a BOM."""


@st.composite
def damaged(draw: st.DrawFn) -> bytes:
    """A message with a few bytes inserted, removed or overwritten anywhere."""
    raw = draw(messages())
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(raw)))
        edit = draw(st.sampled_from(["insert", "delete", "replace"]))
        piece = draw(st.sampled_from(DAMAGE))
        end = at if edit == "insert" else at + (1 if edit == "delete" else len(piece))
        raw = raw[:at] + (b"" if edit == "delete" else piece) + raw[end:]
    return raw


not_objects = st.one_of(
    st.sampled_from([b"", b" ", b"null", b"[]", b"1", b'"x"', b"true", b"{}", b"{", b"NaN"]),
    messages().map(lambda raw: b"[" + raw + b"]"),
    messages().map(lambda raw: raw + raw),
    messages().map(lambda raw: b"\xef\xbb\xbf" + raw),
    messages().map(lambda raw: raw + b"x"),
    st.binary(max_size=40),
)


def budget(examples: int) -> settings:
    """Reproducible runs, sized so the whole file takes seconds."""
    return settings(
        max_examples=examples,
        derandomize=True,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


def sample(**changes: Any) -> bytes:
    """A bench-shaped message (as `bench.kpi_scoring` publishes them), with changes."""
    body: dict[str, Any] = {
        "event_id": "bench-00000001",
        "kpi_key": "bench.kpi.00003",
        "value": 812.37,
        "observed_at": "2026-07-01T00:00:01+00:00",
        "source": "bench",
    }
    body.update(changes)
    return orjson.dumps(body)


# --- the properties ----------------------------------------------------------------------------


def sample_with(name: str, value: object) -> bytes:
    """The sample message with one field set (spelled by hand if need be) or left out."""
    body: dict[str, object] = orjson.loads(sample())
    if value is ABSENT:
        del body[name]
    else:
        body[name] = value
    return fragment(body).encode()


@budget(1200)
@given(raw=messages())
def test_messages_at_every_edge_of_the_contract_are_read_as_the_model_reads_them(
    raw: bytes,
) -> None:
    assert_agrees_with_the_model(raw)


@budget(1500)
@given(observed_at=st.one_of(valid_times, time_edges))
def test_every_spelling_of_a_time_is_read_as_the_model_reads_it(observed_at: object) -> None:
    assert_agrees_with_the_model(sample_with("observed_at", observed_at))


@budget(1000)
@given(value=st.one_of(valid_values, value_edges))
def test_every_number_is_read_as_the_model_reads_it(value: object) -> None:
    assert_agrees_with_the_model(sample_with("value", value))


@budget(600)
@given(raw=st.one_of(damaged(), not_objects))
def test_damaged_bytes_and_other_documents_are_read_as_the_model_reads_them(raw: bytes) -> None:
    assert_agrees_with_the_model(raw)


# --- examples ----------------------------------------------------------------------------------


def test_a_bench_message_takes_the_fast_path() -> None:
    expected = KpiReading(
        event_id="bench-00000001",
        kpi_key="bench.kpi.00003",
        value=812.37,
        observed_at="2026-07-01T00:00:01+00:00",
        observed_at_us=1_782_864_001_000_000,
        source="bench",
        unit=None,
        dimensions="{}",
    )
    assert _fast_reading(sample()) == expected
    assert decode_kpi_event(sample()) == expected
    assert model_reading(sample()) == expected


def test_z_and_a_zero_offset_are_one_reading() -> None:
    with_z = decode_kpi_event(sample(observed_at="2026-07-01T00:00:01Z"))
    assert _fast_reading(sample(observed_at="2026-07-01T00:00:01Z")) is not None
    with_offset = decode_kpi_event(sample())
    assert replace(with_z, observed_at="") == replace(with_offset, observed_at="")
    assert datetime.fromisoformat(with_z.observed_at) == datetime(2026, 7, 1, 0, 0, 1, tzinfo=UTC)
    assert datetime.fromisoformat(with_z.observed_at).utcoffset() == timedelta(0)
    assert spelled(with_z) == spelled(with_offset)


def test_an_unknown_field_is_a_schema_violation() -> None:
    with pytest.raises(NotAKpiEventError) as refused:
        decode_kpi_event(sample(region="emea"))
    assert refused.value.reason == "schema_violation"
    assert "region" in refused.value.detail


@pytest.mark.parametrize("offset", ["+05:60", "+00:99", "-01:75"])
def test_an_offset_with_60_minutes_or_more_is_refused(offset: str) -> None:
    """`datetime.fromisoformat` would carry the minutes into the hours (+05:60 as +06:00)."""
    raw = sample(observed_at=f"2026-07-01T00:00:01{offset}")
    assert _fast_reading(raw) is None
    with pytest.raises(NotAKpiEventError) as refused:
        decode_kpi_event(raw)
    assert refused.value.reason == "schema_violation"


@pytest.mark.parametrize("damage", [b"\xff", b"\xc3", b"\xed\xa0\x80"])
def test_invalid_utf8_in_a_string_is_dead_lettered_as_not_json(damage: bytes) -> None:
    """Not an exception out of the decoder: that would stop the whole batch, not one record."""
    raw = sample().replace(b'"bench"', b'"bench' + damage + b'"')
    assert _fast_reading(raw) is None
    with pytest.raises(NotAKpiEventError) as refused:
        decode_kpi_event(raw)
    assert refused.value.reason == "not_json"


def test_the_fast_path_reads_the_reading_of_the_contract_at_its_limits() -> None:
    """Every length, count and time at its limit still takes the fast path, as the model."""
    raw = sample(
        event_id="é" * 200,
        kpi_key="k" * 200,
        value=-0.0,
        observed_at="9999-12-30T00:00:00Z",
        source="\u05d0" * 200,
        unit="u" * 100,
        dimensions={f"d{index}": "v" * 200 for index in range(50)},
    )
    fast = _fast_reading(raw)
    assert fast is not None
    assert fast.observed_at_us == (
        (datetime(9999, 12, 30, tzinfo=UTC) - datetime(1970, 1, 1, tzinfo=UTC))
        // timedelta(microseconds=1)
    )
    model = model_reading(raw)
    assert model is not None
    assert spelled(fast) == spelled(model)
