"""The blast-radius budget: how many distinct targets one response action may reach on one incident.

``RESPONSE_MAX_TARGETS`` distinct targets per (incident or alert, action) within
``RESPONSE_RADIUS_WINDOW_HOURS``, counted across calls: two calls of two users each cannot disable four
users when the cap is three, and a retry (or a second automation rule) naming the same targets does
not count them twice. The budget is checked when targets are proposed (an approval offers no more than
``remaining``) and when acting (``claim``): past the cap the call is refused as a whole with 409 and an
audit line, because acting on an arbitrary subset would be worse than acting on none.

State: one row per incident (or alert) in table ``responsestate``, partition ``response``, RowKey
``radius|<case>``; column ``targets`` = JSON ``{action: {target: first-counted epoch}}``. It is written
with its etag (or created when absent), so of two concurrent calls one wins and the other re-reads and
re-checks. Response actions write it in the same entity group transaction as the leases on their
targets (``core.state.StateStore.acquire``): one request takes the leases and spends the budget.
The pack's other response rows (leases, asynchronous operations) share the partition for that reason.
Calls that name no incident or alert have no budget to share: only the per-call cap applies to them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable

from core.errors import ConfigurationError, Conflict
from core.settings import Settings
from core.state import MAX_TRANSACTION, Operation, StateStore, key_safe, op_create, op_replace

TABLE = "responsestate"
PARTITION = "response"
PREFIX = "radius|"


class BlastRadiusExceeded(Conflict):
    """The call's targets would take the incident past RESPONSE_MAX_TARGETS for this action: nothing was done."""

    code = "BlastRadiusExceeded"


def cap_of(settings: Settings) -> int:
    cap = int(settings["RESPONSE_MAX_TARGETS"])  # type: ignore[arg-type]
    if not 1 <= cap < MAX_TRANSACTION:  # one transaction leases every target of a call
        raise ConfigurationError(f"setting RESPONSE_MAX_TARGETS must be between 1 and {MAX_TRANSACTION - 1}")
    return cap


class BlastRadius:
    """The budget of every incident, read from and written to the state store."""

    def __init__(self, store: StateStore, settings: Settings, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.cap = cap_of(settings)
        self.window = 3600 * int(settings["RESPONSE_RADIUS_WINDOW_HOURS"])  # type: ignore[arg-type]
        self.clock = clock

    @staticmethod
    def row_key(case_key: str) -> str:
        return key_safe(PREFIX + case_key)[:1000]

    def _read(self, case_key: str) -> dict | None:
        return self.store.get(TABLE, PARTITION, self.row_key(case_key))

    def _counted(self, row: dict | None, action: str) -> dict[str, float]:
        """The action's targets counted within the window (older ones no longer count)."""
        if row is None:
            return {}
        try:
            targets = json.loads(row.get("targets") or "{}").get(action) or {}
        except (ValueError, AttributeError):
            targets = {}
        since = self.clock() - self.window
        return {str(t): float(at) for t, at in targets.items() if float(at) >= since}

    def remaining(self, case_key: str, action: str) -> int:
        """How many more distinct targets ``action`` may reach on this incident now (for approvals: offer no
        more than this). ``action`` is the response action's name: ``mde-isolate``, ``mde-release``,
        ``entra-disable-user``, ``entra-enable-user``, ``entra-revoke-sessions``,
        ``entra-confirm-compromised``, ``block-ip``, ``unblock-ip``."""
        return max(0, self.cap - len(self._counted(self._read(case_key), action)))

    def check(self, case_key: str, action: str, targets: Iterable[str], what: str) -> None:
        """Raise BlastRadiusExceeded when ``targets`` would exceed the budget; changes nothing (dry runs)."""
        Claim(self, case_key, action, targets, what, row=self._read(case_key)).planned()

    def claim(self, case_key: str, action: str, targets: Iterable[str], what: str) -> Claim:
        """The budget spent on ``targets``, as a companion of a lease transaction (core.state.Companion)."""
        return Claim(self, case_key, action, targets, what)

    def reserve(self, case_key: str, action: str, targets: Iterable[str], what: str, attempts: int = 4) -> None:
        """Spend the budget on ``targets`` on its own (when they are known only after the leases were taken)."""
        from core.state import TransactionFailed

        claim = self.claim(case_key, action, targets, what)
        for _ in range(attempts):
            ops = claim.operations()
            if not ops:
                return
            try:
                self.store.transaction(TABLE, ops)
                return
            except TransactionFailed:
                claim.refresh()
        raise Conflict("the blast-radius budget of this incident changed under too many concurrent calls; retry",
                       code="BlastRadiusContended")


class Claim:
    """Targets to count for one action on one incident. The first plan assumes the incident has no row yet
    (the usual first call: one insert, no read); a refused insert or replace re-reads the row."""

    def __init__(self, radius: BlastRadius, case_key: str, action: str, targets: Iterable[str], what: str,
                 row: dict | None = None) -> None:
        self.radius, self.case_key, self.action, self.what = radius, case_key, action, what
        self.targets = sorted({t.lower() for t in targets if t})
        self.row = row
        self.already: list[str] = []  # targets counted by earlier calls (after planned())
        self.new: list[str] = []  # targets this call adds

    def planned(self) -> dict | None:
        """The row to write (None: nothing new to count); BlastRadiusExceeded past the cap."""
        counted = self.radius._counted(self.row, self.action)
        self.already = [t for t in self.targets if t in counted]
        self.new = [t for t in self.targets if t not in counted]
        total = len(counted) + len(self.new)
        if total > self.radius.cap:
            earlier = f"{len(counted)} already acted on for this incident within "\
                      f"{self.radius.window // 3600} h; " if counted else ""
            raise BlastRadiusExceeded(
                f"{len(self.new)} more {self.what} for {self.action}: {earlier}that makes {total}, over "
                f"RESPONSE_MAX_TARGETS={self.radius.cap}: nothing was done; split the response or raise the limit "
                "deliberately")
        if not self.new:
            return None
        try:
            everything = json.loads((self.row or {}).get("targets") or "{}")
        except ValueError:
            everything = {}
        now = self.radius.clock()
        everything[self.action] = {**counted, **{t: now for t in self.new}}
        return {"PartitionKey": PARTITION, "RowKey": BlastRadius.row_key(self.case_key),
                "targets": json.dumps(everything, sort_keys=True)[:60000]}

    def operations(self) -> list[Operation]:
        entity = self.planned()
        if entity is None:
            return []
        return [op_replace(entity, self.row["_etag"]) if self.row is not None else op_create(entity)]

    def refresh(self) -> None:
        self.row = self.radius._read(self.case_key)


__all__ = ["PARTITION", "TABLE", "BlastRadius", "BlastRadiusExceeded", "Claim", "cap_of"]
