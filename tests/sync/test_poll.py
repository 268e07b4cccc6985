"""Pure parts of the poll: where a change may still be committing."""

from __future__ import annotations

from sync.poll import fresh_from, shift_stamp
from sync.servicenow import Position


def test_shift_stamp():
    assert shift_stamp("2026-11-20 10:00:03", -5) == "2026-11-20 09:59:58"
    assert shift_stamp("2026-12-31 23:59:59", 1) == "2027-01-01 00:00:00"


def row(stamp: str) -> dict:
    return {"sys_updated_on": stamp, "sys_id": "a" * 32}


def test_a_page_read_long_after_its_changes_needs_no_second_look():
    assert fresh_from(Position("2026-11-20 10:00:00"), [row("2026-11-20 10:00:05")], "2026-11-20 10:02:00", 10) == ""


def test_a_page_read_right_after_its_changes_is_read_again_from_where_they_may_still_commit():
    rows = [row("2026-11-20 10:00:01"), row("2026-11-20 10:00:20")]
    # read at 10:00:25 with a 10 s overlap: stamps up to 10:00:14 had committed; 10:00:15 on may still come
    assert fresh_from(Position("2026-11-20 10:00:00"), rows, "2026-11-20 10:00:25", 10) == "2026-11-20 10:00:15"
    # never before where the page started
    assert fresh_from(Position("2026-11-20 10:00:18", "b" * 32), rows, "2026-11-20 10:00:25", 10) \
        == "2026-11-20 10:00:18"
    assert fresh_from(Position("2026-11-20 10:00:00"), [], "2026-11-20 10:00:25", 10) == ""
