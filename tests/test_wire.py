"""The wire format of a pool worker's channel, and the slot word that tells
the parent when a timed task started."""

from __future__ import annotations

import time

import pytest

from mpguard import _platform
from mpguard._pool import _wire


def test_stamp_marks_the_task_started():
    word = _wire.stamp(7)
    assert _wire.started(word, 7)
    assert not _wire.started(word, 8)
    assert _wire.started(_wire.mark(9), 9)


def test_elapsed_is_measured_from_the_stamp():
    now = int(time.monotonic() * 1000)
    assert _wire.elapsed_ms(_wire.stamp(1), now + 250) in range(240, 260)


def test_stamp_newer_than_the_readers_clock_is_just_started():
    # The parent reads its clock, then the worker stamps: the stamp is a
    # few ms "in the future".  Taken modulo 2**32 that read as 49 days and
    # killed a task 5 ms after it started (seen once in CI).
    now = int(time.monotonic() * 1000)
    assert _wire.elapsed_ms(_wire.stamp(1), now - 5) == 0


def test_elapsed_survives_the_32_bit_wrap():
    word = (1 << 32) | 0xFFFFFFF0  # stamped 16 ms before the wrap
    assert _wire.elapsed_ms(word, (1 << 32) + 4) == 20


@pytest.fixture
def pair():
    """A channel's two ends (parent, child) and a receive buffer."""
    parent, child = _platform.channel_pair()
    yield parent, child, _wire.new_buffer()
    parent.close()
    child.close()


def test_a_batch_read_gets_inline_and_file_payloads_in_order(pair):
    # The parent reads every queued result in one call; a payload too big
    # for one message arrives as a file descriptor, and both kinds come
    # back as bytes in the order sent.
    parent, child, buf = pair
    big = bytes(range(256)) * (_platform.INLINE_MAX // 256 + 1)
    _wire.send(child, 1, 0, b"small", block=True)
    _wire.send(child, 2, 0, big, block=True)
    message = _wire.encode(3, _wire.TIMED, b"encoded")
    assert message is not None
    _wire.send_encoded(child, message)
    assert _wire.encode(4, 0, big) is None  # travels in a file instead
    got = _wire.recv_ready(parent, buf, 10)
    assert [(seq, bytes(data)) for seq, data in got] == [
        (1, b"small"),
        (2, big),
        (3, b"encoded"),
    ]
    assert _wire.recv_ready(parent, buf, 10) == []  # empty: no error
    for seq in (5, 6, 7):
        _wire.send(child, seq, 0, b"x", block=True)
    assert [seq for seq, _ in _wire.recv_ready(parent, buf, 2)] == [5, 6]
    assert [seq for seq, _ in _wire.recv_ready(parent, buf, 2)] == [7]


def test_an_encoded_task_reads_as_the_same_message(pair):
    parent, child, buf = pair
    message = _wire.encode(9, _wire.TIMED, b"payload")
    assert message is not None
    _wire.send_encoded(parent, message)
    msg = _wire.recv(child, buf, block=True)
    assert msg is not None
    assert (msg.seq, msg.flags, bytes(_wire.payload(msg))) == (
        9,
        _wire.TIMED,
        b"payload",
    )


def test_a_file_payload_that_cannot_be_read_fails_its_own_message_only(pair):
    # Out of descriptors, the kernel drops the attached file (MSG_CTRUNC):
    # the header says "payload in a file" and no descriptor came.  That
    # message reads as an error, and the batch goes on.
    parent, child, buf = pair
    child.send(_wire.HEADER.pack(1, _wire.FD) + (10).to_bytes(8, "little"))
    _wire.send(child, 2, 0, b"next", block=True)
    (seq1, err), (seq2, data) = _wire.recv_ready(parent, buf, 10)
    assert seq1 == 1
    assert isinstance(err, OSError)
    assert "descriptor" in str(err)
    assert (seq2, bytes(data)) == (2, b"next")
