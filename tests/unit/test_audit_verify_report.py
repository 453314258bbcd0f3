"""How `okr audit verify` sums up what it read, and how it recognises a redelivered message,
without a store or a broker."""

from __future__ import annotations

from uuid import uuid4

from services.audit.verify import BITMAP_VERSIONS, VerifyReport, _Delivered


def test_the_summary_says_how_many_messages_are_redeliveries() -> None:
    report = VerifyReport(objectives=12, events=1074, messages=1081, redeliveries=7)

    assert report.summary() == (
        "checked 12 objectives, 1074 events, 0 snapshots, 1081 messages on okr.events"
        " (7 redeliveries of an identical (objective, version)): intact"
    )
    one = VerifyReport(events=5, messages=6, redeliveries=1)
    assert "6 messages on okr.events (1 redelivery of an identical" in one.summary()


def test_no_redelivery_no_topic_nothing_to_explain() -> None:
    assert (
        VerifyReport(events=5, messages=5, redeliveries=0)
        .summary()
        .endswith("5 messages on okr.events: intact")
    )
    no_topic = VerifyReport(events=5)
    assert (no_topic.messages, no_topic.redeliveries) == (None, None)
    assert no_topic.summary() == "checked 0 objectives, 5 events, 0 snapshots: intact"


def test_a_pair_is_a_redelivery_from_its_second_reading_on() -> None:
    delivered = _Delivered()
    first, second = uuid4(), uuid4()

    readings = [
        delivered.again(objective, version)
        for objective, version in [
            (first, 1),
            (first, 2),
            (second, 1),
            (first, 2),
            (first, 9),
            (first, 1),
            (first, BITMAP_VERSIONS + 3),
            (first, BITMAP_VERSIONS + 3),
            (second, BITMAP_VERSIONS + 3),
            (first, 9),
        ]
    ]

    assert readings == [False, False, False, True, False, True, False, True, False, True]
    assert len(delivered.bits[first]) == 2  # versions 1..9: two bytes, not a set of pairs
