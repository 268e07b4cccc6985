"""Leases a run of this process holds, each with an event set when it is given back.

A lease row in Table Storage says that some run is working on a key; which process that run lives in, the row
cannot say. This registry can, for this process: a run that finds a key leased waits on the holder's event when the
holder is here (no Table reads while it waits: issue #16, no spinning locks), and otherwise does what its caller
decides (the sync answers 429 at once, the verdict cache re-reads the row). Entries are per owner: a run whose lease
was taken over gives back only its own entry, never the new holder's.
"""

from __future__ import annotations

import threading
import uuid


def new_owner() -> str:
    """An owner id for a lease: one per run (or per claim) that takes one."""
    return uuid.uuid4().hex


class HeldHere:
    """key -> (owner, event) for the leases runs of this process hold."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: dict[str, tuple[str, threading.Event]] = {}

    def hold(self, key: str, owner: str) -> None:
        with self._lock:
            earlier = self._events.get(key)
            self._events[key] = (owner, threading.Event())
        if earlier is not None:  # a lease taken over: whoever waited on the old one looks again
            earlier[1].set()

    def give_back(self, key: str, owner: str) -> None:
        """``owner``'s lease of ``key`` is over (given back or lost); a later holder's entry stays."""
        with self._lock:
            entry = self._events.get(key)
            if entry is None or entry[0] != owner:
                return
            del self._events[key]
        entry[1].set()

    def event(self, key: str) -> threading.Event | None:
        """The event of the run of this process that holds ``key``, None when no run here holds it."""
        with self._lock:
            entry = self._events.get(key)
        return entry[1] if entry else None
