"""The slot word that tells the parent when a timed task started."""

from __future__ import annotations

import time

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
