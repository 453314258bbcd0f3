"""Key result specs and relative targets ("+30 %") resolved to absolute ones."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from domain.errors import InvalidRelativeTargetError, OkrError
from domain.measures import KeyResultKind, KeyResultSpec, resolve_relative_target
from tests import seed

finite_floats = st.floats(allow_nan=False, allow_infinity=False)


@pytest.mark.parametrize(
    ("baseline", "relative", "expected"),
    [
        (200.0, "+30%", 260.0),
        (8.0, "-5%", 7.6),
        (1000.0, "+1200", 2200.0),
        (1000.0, "-250", 750.0),
        (200.0, "30 %", 260.0),
        (200.0, " + 30 % ", 260.0),
        (8.0, "\u22125%", 7.6),  # unicode minus, as typed by word processors
        (8.0, "\u2013 5 %", 7.6),  # en dash
        (200.0, "+30\u00a0%", 260.0),  # French typography: non-breaking space before %
        (200.0, "+2,5 %", 205.0),  # French decimal comma
        (200.0, "+2.5%", 205.0),
        (1000.0, "+1 200", 2200.0),  # French thousands grouping
        (-100.0, "+30%", -70.0),  # "+" means up even from a negative baseline
        (0.0, "+30%", 0.0),
    ],
)
def test_resolve_relative_target(baseline: float, relative: str, expected: float) -> None:
    assert resolve_relative_target(baseline, relative) == expected


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        "   ",
        "abc",
        "+",
        "%",
        "+30%%",
        "*5",
        "30 percent",
        "+-5%",
        "1e3",
        "+1,200",
        "+\u0663\u0660%",
    ],
)
def test_unreadable_relative_target_is_rejected(garbage: str) -> None:
    with pytest.raises(InvalidRelativeTargetError) as raised:
        resolve_relative_target(100.0, garbage)
    assert isinstance(raised.value, OkrError)
    assert isinstance(raised.value, ValueError)


@pytest.mark.parametrize("baseline", [math.inf, -math.inf, math.nan])
def test_relative_target_needs_a_finite_baseline(baseline: float) -> None:
    with pytest.raises(InvalidRelativeTargetError):
        resolve_relative_target(baseline, "+30%")


def test_relative_target_too_large_for_a_float_is_rejected() -> None:
    with pytest.raises(InvalidRelativeTargetError):
        resolve_relative_target(1e308, "+100%")


@given(baseline=finite_floats, amount=st.integers(min_value=0, max_value=10**9))
def test_absolute_relative_target_adds_to_the_baseline(baseline: float, amount: int) -> None:
    assert resolve_relative_target(baseline, f"+{amount}") == baseline + amount
    assert resolve_relative_target(baseline, f"-{amount}") == baseline - amount


@given(
    baseline=st.floats(min_value=-1e12, max_value=1e12),
    percent=st.integers(min_value=0, max_value=1000),
)
def test_percent_sign_decides_the_direction(baseline: float, percent: int) -> None:
    assert resolve_relative_target(baseline, f"+{percent}%") >= baseline
    assert resolve_relative_target(baseline, f"-{percent}%") <= baseline


def test_resolved_fills_the_target_and_keeps_the_relative_form_for_display() -> None:
    spec = seed.SALES.as_spec()
    resolved = spec.resolved()
    assert resolved.target == 1300.0
    assert resolved.relative_target == "+30%"
    assert spec.target is None  # the original is untouched


def test_resolved_keeps_an_explicit_target() -> None:
    assert seed.SALES.as_spec(target=1500.0).resolved().target == 1500.0


def test_resolved_cannot_fill_the_target_without_a_baseline() -> None:
    assert seed.SALES.as_spec(baseline=None).resolved().target is None


def test_resolved_reports_an_unreadable_relative_target() -> None:
    with pytest.raises(InvalidRelativeTargetError):
        seed.SALES.as_spec(relative_target="lots").resolved()


def test_resolved_ignores_relative_target_on_a_range() -> None:
    spec = seed.PURCHASE_PATH.as_spec(relative_target="-50%")
    assert spec.resolved().target is None


def test_milestone_resolves_to_implicit_baseline_zero_and_target_one() -> None:
    resolved = KeyResultSpec(title="Launch the new checkout", kind="milestone").resolved()
    assert (resolved.baseline, resolved.target) == (0.0, 1.0)


def test_kind_defaults_to_increase_and_weight_to_one() -> None:
    spec = KeyResultSpec(title="Raise NPS to 80")
    assert spec.kind is KeyResultKind.INCREASE
    assert spec.weight == 1.0


def test_kind_values_are_the_wire_names() -> None:
    assert [kind.value for kind in KeyResultKind] == [
        "increase",
        "decrease",
        "range",
        "at_least",
        "at_most",
        "milestone",
    ]


@pytest.mark.parametrize("weight", [0.0, -1.0, math.nan, math.inf])
def test_weight_must_be_a_positive_finite_number(weight: float) -> None:
    with pytest.raises(ValidationError):
        KeyResultSpec(title="Raise NPS to 80", weight=weight)


@pytest.mark.parametrize("field", ["baseline", "target", "target_low", "target_high"])
def test_numbers_must_be_finite(field: str) -> None:
    with pytest.raises(ValidationError):
        KeyResultSpec.model_validate({"title": "Raise NPS to 80", field: math.nan})


def test_unknown_fields_are_rejected() -> None:
    with pytest.raises(ValidationError):
        KeyResultSpec.model_validate({"title": "Raise NPS to 80", "owner": "ana"})


def test_spec_is_immutable() -> None:
    spec = KeyResultSpec(title="Raise NPS to 80")
    with pytest.raises(ValidationError):
        spec.target = 80.0  # type: ignore[misc]


def test_spec_round_trips_through_json() -> None:
    spec = seed.SALES.as_spec()
    assert KeyResultSpec.model_validate_json(spec.model_dump_json()) == spec
