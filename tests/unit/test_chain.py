"""The hash chain on its own: any single edit, deletion or swap of a sealed history is named."""

from __future__ import annotations

from dataclasses import replace
from uuid import UUID

from hypothesis import given
from hypothesis import strategies as st

from domain.chain import GENESIS_HASH, ChainLink, EventRecord, chain_hash, verify_chain

OBJECTIVE = UUID("5d7b0f3c-1f8e-4c59-9a77-0e2a4b8f6c11")

values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**53), 2**53),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
fields = st.dictionaries(st.text(min_size=1, max_size=8), values, max_size=4)


def sealed(all_fields: list[dict[str, object]]) -> list[ChainLink]:
    links, previous = [], GENESIS_HASH
    for version, event_fields in enumerate(all_fields, start=1):
        record = EventRecord(OBJECTIVE, version, "Decided", 1, event_fields)
        previous = chain_hash(previous, record)
        links.append(ChainLink(record, previous))
    return links


@given(st.lists(fields, min_size=1, max_size=8))
def test_an_untouched_history_verifies(history: list[dict[str, object]]) -> None:
    assert verify_chain(OBJECTIVE, sealed(history)) == []


@given(st.lists(fields, min_size=1, max_size=8), st.data())
def test_an_edited_event_is_named(history: list[dict[str, object]], data: st.DataObject) -> None:
    links = sealed(history)
    index = data.draw(st.integers(0, len(links) - 1))
    # No drawn key is 9 characters long: the edit always adds a field.
    edited = {**links[index].record.fields, "tampered!": data.draw(values)}
    links[index] = replace(links[index], record=replace(links[index].record, fields=edited))

    assert [b.version for b in verify_chain(OBJECTIVE, links)] == [index + 1]


@given(st.lists(fields, min_size=2, max_size=8), st.data())
def test_a_deleted_event_is_named(history: list[dict[str, object]], data: st.DataObject) -> None:
    links = sealed(history)
    index = data.draw(st.integers(0, len(links) - 2))  # the last one: see the topic check
    del links[index]

    [found] = verify_chain(OBJECTIVE, links)
    assert (found.version, "missing" in found.problem) == (index + 1, True)


@given(st.lists(fields, min_size=2, max_size=8), st.data())
def test_swapped_events_are_named(history: list[dict[str, object]], data: st.DataObject) -> None:
    links = sealed(history)
    index = data.draw(st.integers(0, len(links) - 2))
    first, second = links[index], links[index + 1]
    # Rows keep their place (version) but exchange what they say, hashes included.
    links[index] = ChainLink(
        replace(second.record, version=first.record.version), second.stored_hash
    )
    links[index + 1] = ChainLink(
        replace(first.record, version=second.record.version), first.stored_hash
    )

    assert index + 1 in {b.version for b in verify_chain(OBJECTIVE, links)}


def test_the_encoding_is_canonical() -> None:
    one = EventRecord(OBJECTIVE, 1, "Decided", 1, {"b": 1.5, "a": "é"})
    other = EventRecord(OBJECTIVE, 1, "Decided", 1, {"a": "é", "b": 1.5})

    assert one.canonical() == other.canonical()
    assert (
        one.canonical()
        == (
            '{"class_version":1,"fields":{"a":"é","b":1.5},'
            '"objective_id":"5d7b0f3c-1f8e-4c59-9a77-0e2a4b8f6c11","type":"Decided","version":1}'
        ).encode()
    )


def test_a_missing_hash_is_named() -> None:
    [first, second] = sealed([{"a": 1}, {"b": 2}])

    [found] = verify_chain(OBJECTIVE, [first, replace(second, stored_hash="")])

    assert (found.version, found.problem) == (2, "has no chain hash")
