"""Send-once bookkeeping: a chat message or a mail is sent at most once per event and channel.

Table ``sends``: PartitionKey = the event key (a hash naming the event: notification of an
incident event, approval question, ...), RowKey = the channel (``teams``, ``slack``,
``mail:<recipient>``). Columns ``state`` (sending | sent) and ``claimed_at`` (epoch seconds).

A sender first claims its row with a conditional insert: of two concurrent retries exactly one
sends. Success marks the row ``sent``; failure deletes the claim so the next retry sends. A claim
left by a crashed instance is taken over once it is older than the lease.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from core.state import StateStore, key_safe

log = logging.getLogger(__name__)

TABLE = "sends"
LEASE_SECONDS = 120.0


class SendLedger:
    def __init__(self, store: StateStore, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock

    def _claim(self, event: str, channel: str) -> bool | None:
        """True: we may send; None: already sent; False: another caller is sending now."""
        row = {"PartitionKey": key_safe(event), "RowKey": key_safe(channel), "state": "sending",
               "claimed_at": self.clock()}
        if self.store.insert_if_absent(TABLE, row):
            return True
        current = self.store.get(TABLE, row["PartitionKey"], row["RowKey"])
        if current is None:
            return self.store.insert_if_absent(TABLE, row)
        if current.get("state") == "sent":
            return None
        if self.clock() - float(current.get("claimed_at", 0)) > LEASE_SECONDS:
            return self.store.replace_if_unchanged(TABLE, row, current["_etag"])
        return False

    def send_once(self, event: str, channel: str, send: Callable[[], Any]) -> str:
        """Run ``send`` unless this event was already sent on this channel.

        Returns ``sent``, ``already-sent`` or ``in-progress``; re-raises what ``send`` raises
        after releasing the claim.
        """
        claim = self._claim(event, channel)
        if claim is None:
            return "already-sent"
        if not claim:
            return "in-progress"
        try:
            send()
        except BaseException:
            self.store.delete(TABLE, key_safe(event), key_safe(channel))
            raise
        self.store.upsert(TABLE, {"PartitionKey": key_safe(event), "RowKey": key_safe(channel), "state": "sent",
                                  "claimed_at": self.clock()})
        return "sent"
