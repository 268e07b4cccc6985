"""One call of a response action: its case, guardrails, per-target results, audit and answer.

Every action (isolate, release, Entra user actions, block / unblock) runs the same way:
resolve the targets (refusing protected, unknown and ambiguous ones), apply the blast-radius cap,
act on each target after checking its current state, then ``close``: write the audit (log lines and
the incident comment) *before* answering, whatever happened, and choose the answer:

- a retry-worthy failure (429, 5xx, storage down) is raised after the audit, so the Logic App retries
  and the retry, idempotent, completes the same comment;
- when no target reached the wanted state: the first per-target failure (e.g. 403 from Graph) or a 409
  ``ResponseRefused`` naming every refusal;
- otherwise the summary (200, or 202 for pending machine actions).
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any

from core.audit import AuditEntry, AuditTrail
from core.case import Case
from core.context import Context
from core.errors import BadRequest, PackError
from response.guardrails import Guardrails, ResponseRefused, refusal_message

log = logging.getLogger(__name__)

# Outcomes meaning "this target is (or would be) in the wanted state, or the feature is unavailable".
REACHED = frozenset({"done", "pending", "already", "would", "unavailable"})
GUID = re.compile(r"^[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")
LOCKS_TABLE = "responselocks"  # one short lease per target being acted on (core.state.StateStore.lock)


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

    @property
    def dry_run(self) -> bool:
        return self.guard.dry_run

    @contextmanager
    def locked(self, kind: str, targets: Iterable[str]) -> Iterator[None]:
        """Hold the lock of every target while checking and changing its state.

        Concurrent runs on one target (duplicate triggers, retries) then act one after the other,
        and the later ones find the state the first left instead of writing again. Locks are taken
        in sorted order so two runs never wait on each other in a circle; a dry run takes none.
        """
        if self.dry_run:
            yield
            return
        with ExitStack() as held:
            for target in sorted({t.lower() for t in targets if t}):
                held.enter_context(self.ctx.state.lock(LOCKS_TABLE, f"{kind}|{target}"))
            yield

    def add(self, target: str, outcome: str, detail: str = "", ids: tuple[str, ...] | list[str] = (),
            **data: Any) -> AuditEntry:
        entry = AuditEntry(target, outcome, detail, tuple(i for i in ids if i), data)
        self.entries.append(entry)
        return entry

    def refuse(self, target: str, reason: str, **data: Any) -> None:
        self.add(target, "refused", reason, **data)

    def require(self, what: str) -> None:
        """The payload named no target of this kind: audit that, and answer 400."""
        if not self.subjects:
            self.close(BadRequest(f"no {what} entity in the payload: nothing to do for {self.action}"),
                       note=f"no {what} entity")

    def limit(self, targets: Sequence[str], what: str) -> None:
        """The blast-radius cap: over it, every target is refused and the call answers 409."""
        if len(targets) > self.guard.max_targets:
            for target in targets:
                self.refuse(target, "blast-radius cap")
            self.guard.check_radius(len(targets), what)

    def failed(self, target: str, error: PackError, **data: Any) -> None:
        """A target whose action failed for a reason a retry will not fix (kept to answer with)."""
        self.add(target, "failed", error.message, **data)
        self.failures.append(error)

    def close(self, error: PackError | None = None, *, note: str = "", **extra: Any) -> dict[str, Any]:
        """Audit, then raise or return the summary (see the module docstring)."""
        if error is not None and not note:
            note = error.message
        comment = self.audit.record(self.case, self.action, self.title, self.entries, subjects=self.subjects,
                                          dry_run=self.dry_run, note=note)
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
            "commentSkipped": None if self.case.incident_id else "no incident id in the payload: audited in the logs",
            **extra,
        }

    @property
    def audit(self) -> AuditTrail:
        return AuditTrail(self.ctx.sentinel, self.ctx.state)


__all__ = ["GUID", "REACHED", "ResponseRun", "parse_flag"]
