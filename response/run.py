"""One call of a response action: its case, guardrails, per-target results, audit and answer.

Every action (isolate, release, Entra user actions, block / unblock) runs the same way:
resolve the targets (refusing protected, unknown and ambiguous ones, side by side), take the targets'
leases and spend the incident's blast-radius budget in one transaction (``take``), act on the targets side
by side (``each``, at most ``RESPONSE_POOL_SIZE`` at a time) after checking each one's current state, then
``close``: write the audit (log lines and the incident comment) and, beside it, store what a later run reads (the
audit's entries, deferred ledger marks) then give the leases back, *before* answering, whatever happened, and
choose the answer:

- a target another run holds: the call *observes* instead (no lease, no write): when every target already is
  in the wanted state (a duplicate trigger or a retry arriving as the first run ends) it answers as any retry
  would (``already`` / ``pending``, audited in the logs; the holder writes the incident comment); when a
  target still needs a write it answers 429 + Retry-After at once (``Busy``) and the Logic App retries.
  Nothing polls: duplicates never wait on each other, and a crowd of retries does not queue on one lease;

- a retry-worthy failure (429, 5xx, storage down) is raised after the audit, so the Logic App retries;
  the retry, idempotent, acts on what is left;
- when no target reached the wanted state: the first per-target failure (e.g. 403 from Graph) or a 409
  ``ResponseRefused`` naming every refusal;
- otherwise the summary (200, or 202 for pending machine actions).

Audit comments are never edited (issue #15, item 11: the Defender portal does not show comment edits):
``AuditTrail(..., edits=False)`` writes a retry with the *same* content under the same id (a PUT of the same
comment), and new information (the retry did what the first attempt could not) as a new comment, merged with
what the first attempt did, so nothing is lost; both go through the incident's comment budget (``ctx.comments``).

Entities the case skipped with a reason (``Case.skipped``: an IP entity without an address, a hash of the
wrong length...) are ``skipped`` rows of the kinds the action acts on (``skip``). A payload with no entity
left to act on is the documented 400 "no <kind> entity" (``require``), which names the skipped ones; the
audit comment shows their rows.
"""

from __future__ import annotations

import contextvars
import logging
import re
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, TypeVar

from core.audit import AuditEntry, AuditTrail
from core.case import Case
from core.concurrency import run_all, run_bounded
from core.context import Context
from core.errors import BadRequest, Busy, PackError, StateUnavailable
from core.radius import PARTITION, TABLE, BlastRadius, BlastRadiusExceeded
from core.state import Lease, Operation
from response.guardrails import Guardrails, ResponseRefused, refusal_message

log = logging.getLogger(__name__)
T = TypeVar("T")

# Outcomes meaning "this target is (or would be) in the wanted state, or the feature is unavailable".
REACHED = frozenset({"done", "pending", "already", "would", "unavailable"})
SKIPPED = "skipped"  # an entity of the action's kind that names no usable target (Case.skipped)
GUID = re.compile(r"^[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")
# Leases (RowKey ``lease|<kind>|<target>``), blast-radius rows and asynchronous operations share one partition
# of one table, so one entity group transaction can take the leases and spend the budget (core/radius.py).
STATE_TABLE, STATE_PARTITION = TABLE, PARTITION
LEASE_SECONDS = 60.0  # longer than any action holds a target; a crashed run's lease frees itself after it
_collector: contextvars.ContextVar[list[AuditEntry] | None] = contextvars.ContextVar("response_entries",
                                                                                    default=None)


_USERINFO = re.compile(r"//[^/?#@\s]*@")


def _shown(kind: str, value: str) -> str:
    """A skipped value as a row shows it: a URL that did not parse may still carry credentials or tokens, so it
    loses its userinfo, query and fragment as any URL the pack sends on does."""
    if kind != "url":
        return value
    return _USERINFO.sub("//", value).split("?", 1)[0].split("#", 1)[0]


def parse_flag(value: str | None, name: str) -> bool:
    """A boolean query parameter (``?dryRun=true``); anything else than true/false is a 400 naming it."""
    if value is None or value.strip() == "":
        return False
    text = value.strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    raise BadRequest(f"query parameter {name} must be true or false, got {value[:20]!r}")


class ResponseRun:
    def __init__(self, ctx: Context, case: Case, *, action: str, title: str, dry_run_requested: bool = False
                 ) -> None:
        self.ctx = ctx
        self.case = ctx.with_entities(case)
        self.action = action
        self.title = title
        self.guard = Guardrails.from_settings(ctx.settings, dry_run_requested=dry_run_requested)
        self.entries: list[AuditEntry] = []
        self.failures: list[PackError] = []
        self.subjects: list[str] = []
        self.pool = max(1, int(ctx.settings["RESPONSE_POOL_SIZE"]))  # type: ignore[arg-type]
        self.release_also: list[Operation] = []  # rows written when the leases are given back (close)
        self._lease: Lease | None = None
        self._guard = threading.Lock()
        self._deferred: list[Callable[[], Any]] = []  # writes recording what was done (``defer``)
        self.busy: PackError | None = None  # set when another run holds a target: this run only observes

    @property
    def dry_run(self) -> bool:
        return self.guard.dry_run

    @property
    def observing(self) -> bool:
        return self.busy is not None

    @property
    def read_only(self) -> bool:
        """No write may happen: a dry run, or a run observing the target another run holds. Where a write would
        be needed the action records ``would`` (a dry run reports it; an observing run answers 429)."""
        return self.dry_run or self.observing

    @property
    def case_key(self) -> str | None:
        """What the blast-radius budget is kept per: the incident, else the alert."""
        return self.case.incident_id or self.case.alert_id

    # -- leases and the blast radius ----------------------------------------------------------
    def take(self, kind: str, targets: Sequence[str], *, what: str, counted: Sequence[str] | None = None) -> None:
        """Lease ``targets`` and spend the blast-radius budget on ``counted`` (default: the targets), together.

        Concurrent runs on one target (duplicate triggers, retries) cannot both act: the first holds the
        lease until ``close``; another one *observes* (``busy`` set, no lease, no write): it answers with the
        targets' state when the first already reached it, else 429 + Retry-After at once (see ``close``).
        Past the cap nothing is done: every new target is refused and the call answers 409. A dry run takes
        no lease and spends nothing, but is refused past the cap all the same.
        """
        counted = list(targets if counted is None else counted)
        self.limit(counted, what)
        radius = BlastRadius(self.ctx.state, self.ctx.settings)
        try:
            if not self.dry_run:
                claim = radius.claim(self.case_key, self.action, counted, what) if self.case_key and counted \
                    else None
                keys = [f"lease|{kind}|{t.lower()}" for t in targets if t]
                try:
                    self._lease = self.ctx.state.acquire(STATE_TABLE, keys, partition=STATE_PARTITION,
                                                         hold_seconds=LEASE_SECONDS, companion=claim)
                    return
                except Busy as exc:
                    self.busy = exc
            if self.case_key and counted:  # a dry run or an observer spends nothing but is refused past the cap
                radius.check(self.case_key, self.action, counted, what)
        except BlastRadiusExceeded as exc:
            self._refuse_over_cap(counted, exc)
            raise

    def count(self, targets: Sequence[str], what: str) -> None:
        """Spend the budget on targets known only after the leases were taken (users, resolved inside them)."""
        self.limit(targets, what)
        if not self.case_key or not targets:
            return
        radius = BlastRadius(self.ctx.state, self.ctx.settings)
        try:
            if self.read_only:
                radius.check(self.case_key, self.action, targets, what)
            else:
                radius.reserve(self.case_key, self.action, targets, what)
        except BlastRadiusExceeded as exc:
            self._refuse_over_cap(targets, exc)
            raise

    def limit(self, targets: Sequence[str], what: str) -> None:
        """The per-call cap (also for calls without an incident): over it, every target is refused, 409."""
        if len({t.lower() for t in targets}) > self.guard.max_targets:
            for target in targets:
                self.refuse(target, "blast-radius cap")
            self.guard.check_radius(len(targets), what)

    def _refuse_over_cap(self, targets: Sequence[str], error: BlastRadiusExceeded) -> None:
        for target in targets:
            self.refuse(target, f"blast-radius cap (RESPONSE_MAX_TARGETS={self.guard.max_targets} per incident "
                                f"and action): {error.message[:200]}")

    # -- acting on targets side by side ---------------------------------------------------------
    def each(self, items: Sequence[T], work: Callable[[T], Any]) -> list[Any]:
        """``work(item)`` for every item, ``RESPONSE_POOL_SIZE`` at a time; the values in the items' order.

        Audit entries keep the items' order whatever order the calls finish in. A PackError of one item does
        not stop the others (each target is independent); after all finished, the first one (in item order)
        is raised, as a one-by-one loop would have raised it, and its retry finds the others done.
        """
        def one(item: T) -> tuple[Any, list[AuditEntry]]:
            collected: list[AuditEntry] = []
            token = _collector.set(collected)
            try:
                return work(item), collected
            except PackError as exc:
                exc.collected = collected  # type: ignore[attr-defined]
                raise
            finally:
                _collector.reset(token)

        outcomes = run_bounded(one, items, self.pool)
        into = _collector.get()  # called from a target's work: its entries stay with that target
        entries = into if into is not None else self.entries
        values, first_error = [], None
        for outcome in outcomes:
            if outcome.ok:
                value, collected = outcome.value  # type: ignore[misc]
                values.append(value)
            else:
                collected = getattr(outcome.error, "collected", [])
                values.append(None)
                first_error = first_error or outcome.error
            entries.extend(collected)
        if first_error is not None:
            raise first_error
        return values

    def add(self, target: str, outcome: str, detail: str = "", ids: tuple[str, ...] | list[str] = (), *,
            fresh: bool = False, **data: Any) -> AuditEntry:
        """One audit entry; ``fresh``: this call started what it reports (core.audit.AuditEntry.fresh)."""
        entry = AuditEntry(target, outcome, detail, tuple(i for i in ids if i), data, fresh=fresh)
        collected = _collector.get()
        if collected is not None:
            collected.append(entry)
        else:
            with self._guard:
                self.entries.append(entry)
        return entry

    def defer(self, write: Callable[[], Any]) -> None:
        """A write that records what was done (e.g. the write ledger's ``done`` mark): made at ``close``, beside the
        comment and before the leases are given back, instead of on the way to the answer. When it fails the call
        answers the storage error (503) after its audit, and the retry finds the target's state."""
        with self._guard:
            self._deferred.append(write)

    def refuse(self, target: str, reason: str, **data: Any) -> None:
        self.add(target, "refused", reason, **data)

    def skip(self, *kinds: str) -> None:
        """A ``skipped`` row for every entity of ``kinds`` the case could not use, with its reason; their values
        join the subjects (they name the call as much as the usable ones)."""
        for item in self.case.skipped:
            if item.kind in kinds:
                value = _shown(item.kind, item.value)
                self.add(value or f"({item.kind} entity without a value)", SKIPPED, item.reason, kind=item.kind)
                self.subjects.append(f"skipped:{item.kind}:{value}")

    def require(self, what: str, targets: Sequence[Any]) -> None:
        """The payload named no usable target of this kind: audit that (with the skipped rows), and answer 400.
        A target refused while it was being read counts as one (the call then answers 409 naming it)."""
        if targets or any(e.outcome == "refused" for e in self.entries):
            return
        skipped = [e for e in self.entries if e.outcome == SKIPPED]
        listed = "; ".join(f"{e.target}: {e.detail}" for e in skipped)[:600]
        detail = f" ({len(skipped)} skipped: {listed})" if skipped else ""
        self.close(BadRequest(f"no {what} entity to act on in the payload{detail}: nothing to do for {self.action}"),
                   note=f"no {what} entity to act on{detail}")

    def failed(self, target: str, error: PackError, **data: Any) -> None:
        """A target whose action failed for a reason a retry will not fix (kept to answer with)."""
        self.add(target, "failed", error.message, **data)
        with self._guard:
            self.failures.append(error)

    # -- the end of the call ------------------------------------------------------------------
    def close(self, error: PackError | None = None, *, note: str = "", **extra: Any) -> dict[str, Any]:
        """Give the leases back and audit side by side, then raise or return the summary (module docstring)."""
        if error is not None and not note:
            note = error.message
        if self.busy is not None and error is None and any(e.outcome == "would" for e in self.entries):
            error = self.busy  # a target still needs the write the holder is making: retry after it
        # An observer audits in the logs only: the holder writes the call's comment, which an observer's
        # "already" must not overwrite before the holder's "done" is stored.
        audited = replace(self.case, incident_id=None) if self.observing else self.case
        audit = self.audit.prepare(audited, self.action, self.title, self.entries, subjects=self.subjects,
                                   dry_run=self.dry_run, note=note)

        def record_then_release() -> None:
            # What a later run on these targets reads (the entries a retry merges, the write ledger's marks) is
            # stored before the leases are given back, so that run finds it; all of it beside the comment.
            try:
                run_all(audit.keep, *self._deferred)
            finally:
                self._release()

        comment, _ = run_all(audit.comment, record_then_release)
        if error is not None:
            raise error
        if not any(e.outcome in REACHED for e in self.entries):
            if self.failures:
                raise self.failures[0]
            refusal = refusal_message(self.entries)
            if refusal:
                raise ResponseRefused(refusal)
        counts = Counter(e.outcome for e in self.entries)
        return {
            "action": self.action,
            "case": self.case.label,
            "incident": self.case.incident_id,
            "dryRun": self.dry_run,
            "results": [e.to_dict() for e in self.entries],
            "counts": dict(counts),
            "auditComment": comment,
            "commentSkipped": self._comment_skipped(comment),
            **({"note": note} if note else {}),
            # Another run held a target: this one found it in the wanted state and wrote nothing.
            **({"observedConcurrentRun": True} if self.observing else {}),
            **extra,
        }

    def _comment_skipped(self, comment: str | None) -> str | None:
        if not self.case.incident_id:
            return "no incident id in the payload: audited in the logs"
        if self.observing:
            return "another run of this call holds its targets and writes the incident comment"
        if comment is None:
            return ("not commented: the incident's comment budget is spent (SENTINEL_COMMENT_RESERVE); the answer "
                    "and the logs carry the result")
        return None

    def _release(self) -> None:
        """Give the leases back, writing ``release_also`` in the same request. Without such rows a failed release
        only costs the lease's expiry; with them (an operation to poll) the caller must retry."""
        lease, self._lease = self._lease, None
        if lease is None and not self.release_also:
            return
        try:
            self.ctx.state.release(lease or Lease(STATE_TABLE, STATE_PARTITION), self.release_also)
        except StateUnavailable:
            if self.release_also:
                raise
            log.warning("could not release the leases of %s; they expire by themselves", self.action)

    @property
    def audit(self) -> AuditTrail:
        return AuditTrail(self.ctx.sentinel, self.ctx.state, self.ctx.comments, edits=False)


__all__ = ["GUID", "REACHED", "SKIPPED", "STATE_PARTITION", "STATE_TABLE", "ResponseRun", "parse_flag"]
