"""Pure helpers of the sync service: where a poll run starts reading."""

from __future__ import annotations

from sync.service import LOOKBACK_SECONDS, poll_cursor, shift_stamp


def test_shift_stamp():
    assert shift_stamp("2026-11-20 10:00:03", -5) == "2026-11-20 09:59:58"
    assert shift_stamp("2026-12-31 23:59:59", 1) == "2027-01-01 00:00:00"


def test_poll_cursor_reads_from_the_earlier_of_watermark_and_floor():
    # Idle: the last complete run started well after the newest change -> only that second again.
    assert poll_cursor("2026-11-20 10:00:00", "2026-11-20 10:05:55") == "2026-11-20 10:00:00"
    # Changes just before the last run started: from its start minus the look-back.
    assert poll_cursor("2026-11-20 10:06:00", "2026-11-20 10:05:55") == "2026-11-20 10:05:55"
    # No floor (first run, or the last run stopped early): the look-back before the watermark.
    assert poll_cursor("2026-11-20 10:06:00", None) == shift_stamp("2026-11-20 10:06:00", -LOOKBACK_SECONDS)
