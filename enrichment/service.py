"""Reputation enrichment of one Case: every indicator kind looked up side by side, cached, deferred on quota,
one comment per run, label, severity and analyst task.

Indicators (enrichment/indicators.py): IP addresses, files, URLs and domains, cleaned and filtered so that
nothing internal or secret reaches VirusTotal; what is left out is a skipped row with its reason.

Fast under real latency (issue #16): the run reads what it needs once (the verdict cache in batches, the
incident beside the look-ups, or not at all when the trigger body carries it), asks VirusTotal for up to
``VIRUSTOTAL_POOL_SIZE`` indicators at a time (after a quota answer it starts no more and defers the rest),
writes verdicts back to the cache while other look-ups run, and writes its comment, label and task side by
side. Only a severity change (``VIRUSTOTAL_RAISE_SEVERITY``) comes before the comment, whose audit line
reports it.

Idempotent, and readable in the Defender portal (issue #15, item 11): a comment's id is derived from the
incident and the comment's own content, so a retried or repeated run with the same result PUTs the same
comment again (nothing changes), and a run with new information writes a new comment instead of editing an
old one. When VirusTotal's quota runs out, the remaining indicators go to the ``vt-deferred`` queue and the
comment shows them as pending; the queued run writes its own comment once every one has a verdict. Comments
go through the incident's comment budget (core/comments.py).
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from html import escape
from typing import Any

from core.case import SEVERITIES, Case
from core.comments import Written, notice_text
from core.concurrency import run_all, run_bounded
from core.context import Context
from core.credentials import ARM_SCOPE
from core.errors import ConfigurationError, PackError
from core.internal_domains import InternalDomains
from core.internal_domains import from_settings as internal_domains
from core.sentinel import comment_id
from core.tasks import TaskMemo, TaskResult, Tasks, templates_from_setting
from enrichment.cache import VerdictCache, WriteBehind
from enrichment.indicators import Indicator, Policy
from enrichment.report import Row, render
from enrichment.virustotal import VERDICTS, QuotaExceeded, Verdict, VerdictThresholds, VirusTotalClient

log = logging.getLogger(__name__)

DEFER_QUEUE = "vt-deferred"
MALICIOUS_LABEL = "VirusTotal: malicious"
MAX_DEFER_ATTEMPTS = 30  # with backoff capped at an hour: more than a day of retries
MAX_DEFER_DELAY = 3600
TITLE = "VirusTotal reputation"
COMPLETION_TITLE = "VirusTotal reputation: deferred look-ups completed"
TASK_OUTCOME = "enrichment.malicious"
RANK = {name: i for i, name in enumerate(reversed(SEVERITIES))}  # Informational 0 ... High 3
_WARM = threading.Event()  # this process holds the ARM token and the task memo's nonce


@dataclass
class Run:
    """One enrichment pass over a fixed set of indicators (a trigger's, or a deferred completion's)."""

    incident_id: str | None
    label: str
    subject: str  # "incident", "alert" or "entity": what messages call the case
    indicators: list[Indicator]
    skipped: list[tuple[str, str, str]] = field(default_factory=list)  # (kind, value, reason)
    invalid: list[str] = field(default_factory=list)
    verdicts: dict[Indicator, tuple[Verdict, bool]] = field(default_factory=dict)
    deferred: list[Indicator] = field(default_factory=list)
    attempt: int = 0
    completion: bool = False  # a deferred run: reports the indicators the first comment showed pending
    retry_hint: int = 0  # VirusTotal's Retry-After on its quota answer, if it sent one
    incident: dict | None = None  # the incident resource as read (or as the trigger carried it)
    severity_at_start: str | None = None  # the trigger's (or first read's) severity: the audit line's "from"
    lines: list[str] = field(default_factory=list)  # audit lines the comment carries under its tables

    def to_message(self) -> dict[str, Any]:
        pending = self.indicators if self.completion else self.deferred
        return {"incident_id": self.incident_id, "label": self.label, "subject": self.subject,
                "completing": [indicator.key for indicator in pending], "attempt": self.attempt}

    @classmethod
    def from_message(cls, message: dict[str, Any]) -> Run:
        # "completing" since the comment-per-update change; older messages listed every address as "public".
        completing = message.get("completing") or message.get("public") or []
        return cls(incident_id=message.get("incident_id"), label=str(message.get("label", "")),
                   subject=str(message.get("subject") or "incident"),
                   indicators=[Indicator.from_key(str(key)) for key in completing],
                   attempt=int(message.get("attempt", 0)), completion=True)

    @property
    def gave_up(self) -> bool:
        return self.attempt >= MAX_DEFER_ATTEMPTS

    @property
    def malicious(self) -> list[Verdict]:
        return [v for v, _ in self.verdicts.values() if v.verdict == "malicious"]


class NotStarted(Exception):
    """A look-up that was waiting for its slot when an earlier one failed: deferred, never sent."""


class Slots:
    """At most ``size`` VirusTotal look-ups at a time; after the first failure none starts (issue #16 item 1: after
    the first quota error start no more)."""

    def __init__(self, lookup: Callable[[Indicator], Verdict], size: int) -> None:
        self._lookup = lookup
        self._slots = threading.BoundedSemaphore(max(1, size))
        self._stopped = threading.Event()

    def check(self) -> None:
        if self._stopped.is_set():
            raise NotStarted()

    def stop(self) -> None:
        self._stopped.set()

    def lookup(self, indicator: Indicator) -> Verdict:
        self.check()
        with self._slots:
            self.check()
            try:
                return self._lookup(indicator)
            except BaseException:
                self._stopped.set()
                raise


def skip_reason(internal: InternalDomains) -> Callable[[str], str | None]:
    """Why a domain is skipped: the tenant-wide internal-domain rule (core/internal_domains.py), in the
    enrichment's words."""

    def reason(domain: str) -> str | None:
        why = internal.reason(domain)
        return f"{why}: not sent to VirusTotal" if why else None

    return reason


class Enricher:
    def __init__(self, ctx: Context, vt: VirusTotalClient | None = None) -> None:
        settings = ctx.settings
        self.ctx = ctx
        self.thresholds = VerdictThresholds(int(settings["VIRUSTOTAL_MALICIOUS_THRESHOLD"]),
                                            int(settings["VIRUSTOTAL_SUSPICIOUS_THRESHOLD"]))
        if vt is None:
            settings.require("VIRUSTOTAL_API_KEY", "VIRUSTOTAL_ENDPOINT")
            vt = VirusTotalClient(ctx.vt_session, str(settings["VIRUSTOTAL_API_KEY"]),
                                  str(settings["VIRUSTOTAL_ENDPOINT"]), self.thresholds)
        self.vt = vt
        self.ttl = int(settings["VIRUSTOTAL_CACHE_TTL_SECONDS"])
        self.cache = VerdictCache(ctx.state, self.ttl)
        self.retry_seconds = int(settings["VIRUSTOTAL_QUOTA_RETRY_SECONDS"])
        self.add_label = bool(settings["VIRUSTOTAL_LABEL"])
        self.pool = max(1, int(settings["VIRUSTOTAL_POOL_SIZE"]))
        self.raise_to = _severity_setting(str(settings["VIRUSTOTAL_RAISE_SEVERITY"] or ""))
        # The memo (core/tasks.py): a new review task is written without being read first (issue #16).
        self.tasks = Tasks(ctx.sentinel, templates_from_setting(str(settings["INCIDENT_TASKS"] or "")),
                           memo=TaskMemo(ctx.state))
        url_lookup = str(settings["VIRUSTOTAL_URL_LOOKUP"] or "url").strip().lower()
        if url_lookup not in ("url", "domain"):
            raise ConfigurationError("setting VIRUSTOTAL_URL_LOOKUP must be url or domain")
        self.policy = Policy(skip_reason(internal_domains(settings, ctx.session, ctx.tokens)), url_lookup=url_lookup,
                             domains_from_urls=bool(settings["VIRUSTOTAL_DOMAINS_FROM_URLS"]))

    # -- entry points -------------------------------------------------------------------------
    def enrich(self, case: Case) -> dict[str, Any]:
        if not case.entities_included and case.incident_id:
            view = self.ctx.read_case(case)  # a manual run: its entities and the incident, side by side
            case, incident = view.case, view.incident
        else:
            incident = case.resource  # the incident trigger carries the incident (etag, labels, comment count)
        chosen = self.policy.select(case)
        run = Run(case.incident_id, case.label, case.subject, chosen.indicators, chosen.skipped,
                  list(case.invalid_ips), incident=incident, severity_at_start=case.severity)
        return self._complete(run)

    def resume(self, message: dict[str, Any]) -> dict[str, Any]:
        """Finish a deferred run (queue trigger)."""
        return self._complete(Run.from_message(message))

    # -- the run ------------------------------------------------------------------------------
    def _complete(self, run: Run) -> dict[str, Any]:
        calls_before = self.vt.calls
        writes = WriteBehind(self.pool)
        if run.incident_id and not _WARM.is_set():
            # Once per process, beside the look-ups: what the first comment and task would otherwise wait for after
            # the verdicts (the ARM token, whose first request also imports azure-identity, and the memo's nonce).
            writes.submit(self._warm)
        try:
            if run.incident_id and run.incident is None:
                run.incident, _ = run_all(lambda: self.ctx.sentinel.get_incident(run.incident_id),
                                          lambda: self._look_up(run, writes))
            else:
                self._look_up(run, writes)
            if run.severity_at_start is None and run.incident:
                run.severity_at_start = (run.incident.get("properties") or {}).get("severity")
            finished = not (run.completion and run.deferred and not run.gave_up)
            label = self._update_first(run) if finished and self._raises(run) else None
            written, later_label, tasks, _, _ = run_all(
                lambda: self._comment(run) if finished else [],
                lambda: None if label or not finished else self._label(run),
                lambda: self._tasks(run) if finished else [],
                lambda: self._defer(run), writes.wait)
        finally:
            writes.close()  # never leave a write running behind the answer
        summary = self._summary(run, written, label or later_label, tasks)
        summary["virustotalCalls"] = self.vt.calls - calls_before
        return summary

    def _look_up(self, run: Run, writes: WriteBehind) -> None:
        """Verdicts for ``run.indicators``: cache reads in batches (the first look-ups' claims beside them), then
        VirusTotal ``pool`` at a time, each later look-up claimed while it waits for its slot. After the first
        error no look-up starts; a quota answer defers the rest, any other error is the run's answer."""
        reads = self.cache.read(run.indicators, self.pool, claim_first=self.pool)
        run.verdicts.update({indicator: (verdict, True) for indicator, verdict in reads.found.items()})
        self._task_ahead(run, reads.found.values(), writes)
        missing = [indicator for indicator in dict.fromkeys(run.indicators) if indicator not in reads.found]
        slots = Slots(self.vt.lookup, self.pool)

        def one(indicator: Indicator) -> tuple[Verdict, bool]:
            try:
                if indicator in reads.claimed:
                    found = self.cache.fetch_claimed(indicator, slots.lookup, writes, reads.owners[indicator])
                else:
                    slots.check()  # claim nothing once the look-ups have stopped
                    found = self.cache.fetch(indicator, slots.lookup, writes, absent=indicator in reads.absent)
            except Exception:
                slots.stop()
                raise
            self._task_ahead(run, (found[0],), writes)
            return found

        # Twice the pool in threads: while ``pool`` look-ups run, the next ones claim their rows and wait.
        outcomes = run_bounded(one, missing, 2 * self.pool, stop=lambda error: True)
        started = {outcome.item for outcome in outcomes}
        for indicator in reads.claimed - started:
            self.cache.release(indicator, writes, reads.owners[indicator])  # claimed beside the reads, never started
        errors = []
        for outcome in outcomes:
            if outcome.ok:
                run.verdicts[outcome.item] = outcome.get()
            elif not isinstance(outcome.error, (QuotaExceeded, NotStarted)):
                errors.append(outcome.error)
        if errors:
            raise errors[0]
        run.deferred = [indicator for indicator in missing if indicator not in run.verdicts]
        quota = next((o.error for o in outcomes if isinstance(o.error, QuotaExceeded)), None)
        if quota is not None:
            run.retry_hint = quota.retry_after or 0
            log.info("VirusTotal quota reached (%s): %d of %d look-ups deferred for %s", quota.code,
                     len(run.deferred), len(missing), run.label)

    def _task_ahead(self, run: Run, verdicts: Iterable[Verdict], writes: WriteBehind) -> None:
        """At the first malicious verdict, claim the review task in the memo (core/tasks.py) beside the remaining
        look-ups, so that after the last verdict the task is only written, beside the comment."""
        if run.incident_id and any(verdict.verdict == "malicious" for verdict in verdicts):
            self.tasks.prepare(run.incident_id, TASK_OUTCOME, writes.submit)

    def _defer(self, run: Run) -> None:
        if not run.deferred:
            return
        if run.gave_up:
            log.error("giving up VirusTotal lookups for %s after %d attempts", run.label, run.attempt)
            return
        delay = min(MAX_DEFER_DELAY, max(self.retry_seconds, run.retry_hint) * 2 ** min(run.attempt, 6))
        self.ctx.state.enqueue(DEFER_QUEUE, run.to_message() | {"attempt": run.attempt + 1}, delay_seconds=delay)
        log.info("deferred %d lookups for %s by %ss", len(run.deferred), run.label, delay)

    def _warm(self) -> None:
        try:
            self.ctx.tokens.bearer(ARM_SCOPE)  # the comment needs it in any case: no call a run would not make
            self.tasks.warm()
        except PackError as error:  # the comment's or the task's own call reports it
            log.info("not warmed ahead: %s", error.code)
            return
        _WARM.set()

    # -- what the run writes --------------------------------------------------------------------
    def _rows(self, run: Run) -> list[Row]:
        rows: list[Row] = []
        for indicator in run.indicators:
            if indicator in run.verdicts:
                rows.append(Row(indicator.kind, indicator.value, run.verdicts[indicator][0], label=indicator.label))
            elif run.gave_up:
                rows.append(Row(indicator.kind, indicator.value, label=indicator.label,
                                note=f"failed: VirusTotal quota still exhausted after {run.attempt} attempts"))
            else:
                rows.append(Row(indicator.kind, indicator.value, label=indicator.label,
                                note="pending: VirusTotal quota reached; a new comment gives the verdict when the "
                                     "deferred look-up runs"))
        rows += [Row(kind, value, note=f"skipped: {reason}") for kind, value, reason in run.skipped]
        return rows

    def _comment(self, run: Run) -> list[Written]:
        """The run's comment(s), each under an id derived from its content."""
        if not run.incident_id:
            return []
        rows = self._rows(run)
        if not rows:
            return []
        title = COMPLETION_TITLE if run.completion else TITLE
        lines = self._task_line(run) + run.lines
        extra = "".join(f"<p>{escape(line)}</p>" for line in lines)
        parts = []
        for message in render(run.label, rows, self.thresholds, self.ttl / 3600, title=title):
            message = message + extra if extra and len(message) + len(extra) <= 30_000 else message
            digest = hashlib.sha256(message.encode()).hexdigest()[:24]
            parts.append((comment_id(run.incident_id, "reputation", digest), message))
        return self.ctx.comments.write_all(run.incident_id, parts, incident=run.incident)

    def _raises(self, run: Run) -> bool:
        """Whether the run raises the incident's severity (then that update comes before the comment)."""
        if not (self.raise_to and run.incident_id and run.malicious):
            return False
        current = run.severity_at_start or ((run.incident or {}).get("properties") or {}).get("severity")
        return RANK.get(str(current), -1) < RANK[self.raise_to]

    def _update_first(self, run: Run) -> str | None:
        """Label and severity in one etag-safe update; the comment then carries the severity's audit line."""
        label = MALICIOUS_LABEL if self.add_label else None
        raise_to = self.raise_to

        def change(properties: dict) -> bool:
            changed = False
            if label:
                current = list(properties.get("labels") or [])
                if all(str(x.get("labelName", "")).lower() != label.lower() for x in current):
                    properties["labels"] = [*current, {"labelName": label, "labelType": "User"}]
                    changed = True
            if raise_to and RANK.get(str(properties.get("severity")), -1) < RANK[raise_to]:
                properties["severity"] = raise_to  # raised, never lowered
                changed = True
            return changed

        current = run.incident if run.incident and run.incident.get("etag") else None
        result = self.ctx.sentinel.update_incident(run.incident_id, change, current=current)
        now = (result.get("properties") or {}).get("severity")
        if now == raise_to and RANK.get(str(run.severity_at_start), -1) < RANK[raise_to]:
            count = len(run.malicious)
            run.lines.append(f"Severity raised from {run.severity_at_start or 'unknown'} to {raise_to}: {count} "
                             f"malicious indicator{'s' if count != 1 else ''} (VIRUSTOTAL_RAISE_SEVERITY).")
        return label

    def _label(self, run: Run) -> str | None:
        if not (run.malicious and self.add_label and run.incident_id):
            return None
        current = run.incident if run.incident and run.incident.get("etag") else None
        self.ctx.sentinel.add_labels(run.incident_id, MALICIOUS_LABEL, current=current)
        return MALICIOUS_LABEL

    def _task_values(self, run: Run) -> dict[str, Any]:
        names = [v.value for v in run.malicious]
        shown = ", ".join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")
        return {"count": len(names), "indicators": shown}

    def _task_line(self, run: Run) -> list[str]:
        if not (run.incident_id and run.malicious):
            return []
        return [f"Analyst task: {title}" for title in self.tasks.titles(TASK_OUTCOME, **self._task_values(run))]

    def _tasks(self, run: Run) -> list[TaskResult]:
        if not (run.incident_id and run.malicious):
            return []
        return self.tasks.add(run.incident_id, TASK_OUTCOME, **self._task_values(run))

    # -- the answer -----------------------------------------------------------------------------
    @staticmethod
    def _summary(run: Run, written: list[Written], label: str | None, tasks: list[TaskResult]) -> dict[str, Any]:
        items = [v.to_dict() | {"cached": cached} for v, cached in run.verdicts.values()]
        worst = next((name for name in VERDICTS if any(item["verdict"] == name for item in items)), None)
        notes = [text for text in (notice_text(w) for w in written) if text]
        if not run.incident_id:
            comment_skipped = f"no incident id in the {run.subject} body: nothing to comment on"
        elif run.completion and run.deferred and not run.gave_up:
            comment_skipped = "deferred look-ups still pending: the comment comes when all are done"
        else:
            comment_skipped = "; ".join(notes) or None
        nothing = not run.indicators and not run.skipped
        return {
            "incident": run.incident_id,
            "case": run.label,
            "complete": not run.deferred,
            "worstVerdict": worst,
            "maliciousCount": sum(1 for item in items if item["verdict"] == "malicious"),
            "indicators": items,
            "ips": [item for item in items if item["kind"] == "ip"],
            "skipped": [{"kind": kind, "value": value, "reason": reason} | ({"ip": value} if kind == "ip" else {})
                        for kind, value, reason in run.skipped],
            "invalid": run.invalid,
            "deferred": [indicator.value for indicator in run.deferred],
            "comments": [w.comment_id for w in written if w.comment_id],
            "commentSkipped": comment_skipped,
            "label": label,
            "tasks": [task.to_dict() for task in tasks],
            "notes": run.lines,
            "note": f"nothing to look up: the {run.subject} has no IP, file, URL or domain entities" if nothing
            else None,
        }


def _severity_setting(raw: str) -> str | None:
    text = raw.strip()
    if not text or text.lower() in ("off", "none", "false"):
        return None
    for severity in SEVERITIES:
        if severity.lower() == text.lower():
            return severity
    raise ConfigurationError(f"setting VIRUSTOTAL_RAISE_SEVERITY must be empty or one of {', '.join(SEVERITIES)}")
