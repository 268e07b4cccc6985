"""Send-once bookkeeping: a chat message or a mail is sent at most once per event and channel.

Table ``sends``: PartitionKey = the event key (a hash naming the event: notification of an
incident event, approval question, ...), RowKey = the channel (``teams``, ``slack``,
``mail:<recipient>``). Columns ``state`` (sending | sent) and ``claimed_at`` (epoch seconds).

A sender first claims its row with a conditional insert: of two concurrent retries exactly one
sends. Success marks the row ``sent``; failure deletes the claim so the next retry sends. A claim
left by a crashed instance is taken over once it is older than the lease.

A send whose answer was lost (``AnswerLost``: the request went out, no answer came back in time) is
marked ``unconfirmed`` and not sent again: chat webhooks and sendMail cannot be asked whether they
got it, and a slow service almost always did, so sending again would post the message twice. The
channel reports ``unconfirmed`` (and a warning is logged) so the run history shows the doubt.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from core.errors import AnswerLost
from core.state import StateStore, key_safe

log = logging.getLogger(__name__)

TABLE = "sends"
LEASE_SECONDS = 120.0
FINAL = ("sent", "unconfirmed")


class SendLedger:
    def __init__(self, store: StateStore, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock

    def _claim(self, event: str, channel: str) -> bool | str:
        """True: we may send; False: another caller is sending now; else the final state (sent, unconfirmed)."""
        row = {"PartitionKey": key_safe(event), "RowKey": key_safe(channel), "state": "sending",
               "claimed_at": self.clock()}
        if self.store.insert_if_absent(TABLE, row):
            return True
        current = self.store.get(TABLE, row["PartitionKey"], row["RowKey"])
        if current is None:
            return self.store.insert_if_absent(TABLE, row)
        if current.get("state") in FINAL:
            return str(current["state"])
        if self.clock() - float(current.get("claimed_at", 0)) > LEASE_SECONDS:
            return self.store.replace_if_unchanged(TABLE, row, current["_etag"])
        return False

    def _mark(self, event: str, channel: str, state: str) -> None:
        self.store.upsert(TABLE, {"PartitionKey": key_safe(event), "RowKey": key_safe(channel), "state": state,
                                  "claimed_at": self.clock()})

    def send_once(self, event: str, channel: str, send: Callable[[], Any]) -> str:
        """Run ``send`` unless this event was already sent on this channel.

        Returns ``sent``, ``already-sent``, ``unconfirmed`` (this call's or an earlier call's answer was
        lost) or ``in-progress``; re-raises any other failure of ``send`` after releasing the claim.
        """
        claim = self._claim(event, channel)
        if claim == "sent":
            return "already-sent"
        if isinstance(claim, str):
            return claim
        if not claim:
            return "in-progress"
        try:
            send()
        except AnswerLost as lost:
            log.warning("%s of %s: %s; not sent again (reported unconfirmed)", channel.split(":", 1)[0], event,
                        lost.message)
            self._mark(event, channel, "unconfirmed")
            return "unconfirmed"
        except BaseException:
            self.store.delete(TABLE, key_safe(event), key_safe(channel))
            raise
        self._mark(event, channel, "sent")
        return "sent"
