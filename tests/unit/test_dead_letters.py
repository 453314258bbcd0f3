"""A dead letter always fits on `okr.dlq`, and says exactly which record it stands for.

Whatever a record holds (a 1 MB random value, a huge key, hundreds of headers, an error message of
any length), its letter encodes within `MAX_LETTER_BYTES`; a record small enough is kept whole and
round-trips byte for byte; a large one keeps prefixes with the size and SHA-256 of each part. The
publisher falls back to a letter without payload when Kafka refuses one for good, and moves on
(logging the letter) when it refuses even that; only an outage reaches the caller.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from aiokafka import errors as kafka
from hypothesis import given, settings
from hypothesis import strategies as st

from events.dead_letters import DeadLetter, RawBytes, TruncatedBytesError
from projections.job_health import JobBoard, report_to
from services.kafka.dead_letters import (
    MAX_LETTER_BYTES,
    DeadLetterPublisher,
    encoded_dead_letter,
    letter_key,
)
from services.settings import Settings

NOW = datetime(2026, 12, 7, tzinfo=UTC)


@dataclass(frozen=True)
class Record:
    value: bytes | None
    key: bytes | None = b"objective-1"
    headers: list[tuple[str, bytes | None]] = field(default_factory=list)
    topic: str = "kpi.events"
    partition: int = 3
    offset: int = 41
    timestamp: int | None = 1_765_000_000_000


def encode(record: Record, error: str = "not_json: expected value") -> tuple[DeadLetter, bytes]:
    return encoded_dead_letter(record, "not_json", error, failed_at=NOW, consumer_group="g")


def test_a_small_record_is_kept_whole_and_round_trips() -> None:
    record = Record(b'{"broken', headers=[("principal", b"sales"), ("trace", None)])
    letter, encoded = encode(record)
    assert letter.value is not None and letter.value.to_bytes() == record.value
    assert letter.value.size == len(b'{"broken')
    assert letter.value.sha256 == hashlib.sha256(b'{"broken').hexdigest()
    assert [(h.name, h.value and h.value.to_bytes()) for h in letter.headers] == record.headers
    assert DeadLetter.model_validate_json(encoded) == letter


def test_a_1mb_random_value_keeps_a_prefix_its_size_and_digest() -> None:
    value = bytes(range(256)) * 3907 + b"\xff\xfe"  # not UTF-8: base64
    letter, encoded = encode(Record(value))
    assert len(encoded) <= MAX_LETTER_BYTES
    assert letter.value is not None and letter.value.truncated
    assert (letter.value.size, letter.value.sha256) == (
        len(value),
        hashlib.sha256(value).hexdigest(),
    )
    assert letter.value.encoding == "base64"
    with pytest.raises(TruncatedBytesError):
        letter.value.to_bytes()


def test_a_text_prefix_is_never_cut_inside_a_character() -> None:
    text = ("é" * 400_000).encode()  # two bytes each: an odd cut would split one
    letter, _ = encode(Record(b"x" + text))
    assert letter.value is not None and letter.value.truncated
    assert letter.value.encoding == "utf-8"


def test_letters_of_a_version_1_reader_still_read() -> None:
    old = {
        "schema_version": 1,
        "reason": "not_json",
        "error": "bad",
        "origin_topic": "t",
        "origin_partition": 0,
        "origin_offset": 1,
        "key": None,
        "value": {"data": "{x", "encoding": "utf-8"},
        "failed_at": NOW.isoformat(),
    }
    letter = DeadLetter.model_validate(old)
    assert letter.value is not None and letter.value.to_bytes() == b"{x"


@settings(max_examples=60, deadline=None)
@given(
    value=st.one_of(st.none(), st.binary(max_size=3000)),
    value_repeat=st.integers(1, 900),
    key=st.one_of(st.none(), st.binary(max_size=50)),
    key_repeat=st.integers(1, 40_000),
    headers=st.lists(
        st.tuples(st.text(max_size=20), st.one_of(st.none(), st.binary(max_size=40))),
        max_size=8,
    ),
    header_repeat=st.integers(1, 80),
    error=st.text(max_size=200),
    error_repeat=st.integers(1, 5_000),
)
def test_every_letter_fits_and_names_its_record(
    value: bytes | None,
    value_repeat: int,
    key: bytes | None,
    key_repeat: int,
    headers: list[tuple[str, bytes | None]],
    header_repeat: int,
    error: str,
    error_repeat: int,
) -> None:
    record = Record(
        value=None if value is None else value * value_repeat,
        key=None if key is None else key * key_repeat,
        headers=headers * header_repeat,
    )
    letter, encoded = encode(record, error * error_repeat)
    assert len(encoded) <= MAX_LETTER_BYTES
    assert (letter.origin_topic, letter.origin_partition, letter.origin_offset) == (
        "kpi.events",
        3,
        41,
    )
    for part, original in ((letter.value, record.value), (letter.key, record.key)):
        if original is None:
            assert part is None
            continue
        assert part is not None and part.sha256 == hashlib.sha256(original).hexdigest()
        if not part.truncated:
            assert part.to_bytes() == original
    assert len(letter.headers) + letter.headers_dropped == len(record.headers)
    found = letter_key(record.key)
    assert found is None or len(found) <= 1024


# --- the publisher's fallbacks --------------------------------------------------------------------


class Kafka:
    """A `Send` that refuses letters over `limit` bytes, or everything, with the given error."""

    def __init__(self, refuse: type[Exception] | None = None, limit: int | None = None) -> None:
        self.refuse, self.limit = refuse, limit
        self.sent: list[bytes] = []

    async def send(self, topic: str, key: bytes | None, value: bytes, headers: Any) -> None:
        if self.refuse is not None and (self.limit is None or len(value) > self.limit):
            raise self.refuse()
        self.sent.append(value)


def publisher(kafka_: Kafka) -> DeadLetterPublisher:
    return DeadLetterPublisher(Settings(), kafka_.send, consumer_group="g", clock=lambda: NOW)


async def test_a_letter_refused_as_too_large_is_sent_again_without_payload() -> None:
    broker = Kafka(kafka.MessageSizeTooLargeError, limit=2_000)
    board = JobBoard()
    with board.job("scorer") as job:
        report_to(job)
        await publisher(broker).publish(Record(b"x" * 50_000), "not_json", "bad")
    [sent] = broker.sent
    letter = DeadLetter.model_validate_json(sent)
    assert letter.value is not None and letter.value.truncated and letter.value.data == ""
    assert letter.value.size == 50_000
    assert job.dead_letters == {"not_json": 1}


async def test_a_letter_refused_for_good_is_logged_and_the_consumer_moves_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    broker = Kafka(kafka.TopicAuthorizationFailedError)
    board = JobBoard()
    with board.job("scorer") as job, caplog.at_level(logging.ERROR):
        report_to(job)
        await publisher(broker).publish(Record(b"{x"), "not_json", "bad")
    assert broker.sent == []
    assert job.dead_letters == {"unpublished": 1}
    [logged] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert '"origin_offset":41' in logged.getMessage()


@pytest.mark.parametrize(
    "outage", [kafka.KafkaConnectionError, kafka.RequestTimedOutError, kafka.KafkaTimeoutError]
)
async def test_an_outage_reaches_the_caller_which_retries(outage: type[Exception]) -> None:
    with pytest.raises(outage):
        await publisher(Kafka(outage)).publish(Record(b"{x"), "not_json", "bad")


def test_raw_bytes_of_whole_bytes_is_not_truncated() -> None:
    assert not RawBytes.of(b"abc", keep=3).truncated
    assert RawBytes.of(b"abcd", keep=3).truncated
