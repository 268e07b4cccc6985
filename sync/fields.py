"""How much ServiceNow's incident fields hold, and clipping to that with a note.

A string field whose dictionary length is at most 255 is a ``varchar`` of that length: the database keeps no
more, so a longer value loses its end without a word (KB0685779). Longer fields (``description``,
``close_notes``, journal entries) are ``mediumtext`` and take 16 MB; the pack still caps what it writes there,
so one huge Sentinel description cannot make every ticket update heavy. Whatever the sync clips ends with a
note saying so, and where the text matters (the incident title) the full text goes into the description.
"""

from __future__ import annotations

ELLIPSIS = "…"
# varchar columns the sync writes (OOB dictionary lengths).
COLUMN_LENGTHS = {"short_description": 160, "correlation_id": 100, "correlation_display": 100}
# mediumtext fields: the pack's own caps.
TEXT_LENGTHS = {"description": 16_000, "close_notes": 4_000}


def clip(value: str, limit: int, note: str = ELLIPSIS) -> str:
    """``value``, or its beginning and ``note`` within ``limit`` characters."""
    if len(value) <= limit:
        return value
    return value[: max(0, limit - len(note))] + note


def clip_field(name: str, value: str) -> str:
    """A field value clipped to what the field holds, the note telling how much was left out."""
    limit = COLUMN_LENGTHS.get(name) or TEXT_LENGTHS.get(name)
    if limit is None or len(value) <= limit:
        return value
    if name in COLUMN_LENGTHS:
        return clip(value, limit)
    missing = len(value) - limit
    for _ in range(2):  # the note's own length changes how much is left out
        note = f"\n{ELLIPSIS} [clipped by the Sentinel sync: {missing} more characters are in the Sentinel incident]"
        missing = len(value) - (limit - len(note))
    return clip(value, limit, note)


def clipped(name: str, value: str) -> bool:
    return clip_field(name, value) != value


__all__ = ["COLUMN_LENGTHS", "TEXT_LENGTHS", "clip", "clip_field", "clipped"]
