"""IP reputation enrichment of one Case: look up side by side, cache, defer on quota, comment, label.

Fast under real latency (issue #16): the run reads what it needs once (the verdict cache in batches, the
incident beside the look-ups, or not at all when the trigger body carries it), asks VirusTotal for up to
``VIRUSTOTAL_POOL_SIZE`` addresses at a time (after a quota answer it starts no more and defers the rest),
writes verdicts back to the cache while other look-ups run, and writes its comment and label side by side.

Idempotent, and readable in the Defender portal (issue #15, item 11): verdicts come from the shared
cache when fresh; a comment's id is derived from the incident and the comment's own content, so a retried
or repeated run with the same result PUTs the same comment again (nothing changes), and a run with new
information writes a new comment instead of editing an old one; the label is added only if missing. When
VirusTotal's quota runs out, the remaining addresses go to the ``vt-deferred`` queue and the comment shows
them as pending; the queued run writes its own comment with their verdicts once all are known. Comments
go through the incident's comment budget (core/comments.py).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from typing import Any

from core.case import Case
from core.comments import Written, notice_text
from core.concurrency import run_all, run_bounded
from core.context import Context
from core.sentinel import comment_id
from enrichment.cache import VerdictCache, WriteBehind
from enrichment.ip_filter import partition
from enrichment.report import Row, render
from enrichment.virustotal import VERDICTS, IpVerdict, QuotaExceeded, VerdictThresholds, VirusTotalClient

log = logging.getLogger(__name__)

DEFER_QUEUE = "vt-deferred"
MALICIOUS_LABEL = "VirusTotal: malicious"
MAX_DEFER_ATTEMPTS = 30  # with backoff capped at an hour: more than a day of retries
MAX_DEFER_DELAY = 3600
TITLE = "VirusTotal IP reputation"
COMPLETION_TITLE = "VirusTotal IP reputation: deferred look-ups completed"


@dataclass
class Run:
    """One enrichment pass over a fixed set of addresses (a trigger's, or a deferred completion's)."""

    incident_id: str | None
    label: str
    subject: str  # "incident", "alert" or "entity": what messages call the case
    public: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (value, reason)
    invalid: list[str] = field(default_factory=list)
    verdicts: dict[str, tuple[IpVerdict, bool]] = field(default_factory=dict)
    deferred: list[str] = field(default_factory=list)
    attempt: int = 0
    completion: bool = False  # a deferred run: reports the addresses the first comment showed pending
    retry_hint: int = 0  # VirusTotal's Retry-After on its quota answer, if it sent one
    incident: dict | None = None  # the incident resource as read (or as the trigger carried it)

    def to_message(self) -> dict[str, Any]:
        return {"incident_id": self.incident_id, "label": self.label, "subject": self.subject,
                "completing": self.public if self.completion else self.deferred, "attempt": self.attempt}

    @classmethod
    def from_message(cls, message: dict[str, Any]) -> Run:
        # "completing" since the comment-per-update change; older messages listed every address as "public".
        completing = message.get("completing") or message.get("public") or []
        return cls(incident_id=message.get("incident_id"), label=str(message.get("label", "")),
                   subject=str(message.get("subject") or "incident"), public=[str(ip) for ip in completing],
                   attempt=int(message.get("attempt", 0)), completion=True)

    @property
    def gave_up(self) -> bool:
        return self.attempt >= MAX_DEFER_ATTEMPTS


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

    # -- entry points -------------------------------------------------------------------------
    def enrich(self, case: Case) -> dict[str, Any]:
        if not case.entities_included and case.incident_id:
            view = self.ctx.read_case(case)  # a manual run: its entities and the incident, side by side
            case, incident = view.case, view.incident
        else:
            incident = case.resource  # the incident trigger carries the incident (etag, labels, comment count)
        public, skipped = partition([ip.address for ip in case.ips])
        skipped += [(item.value, item.reason) for item in case.skipped if item.kind == "ip"]
        run = Run(case.incident_id, case.label, case.subject, public, skipped, list(case.invalid_ips),
                  incident=incident)
        return self._complete(run)

    def resume(self, message: dict[str, Any]) -> dict[str, Any]:
        """Finish a deferred run (queue trigger)."""
        return self._complete(Run.from_message(message))

    # -- the run ------------------------------------------------------------------------------
    def _complete(self, run: Run) -> dict[str, Any]:
        calls_before = self.vt.calls
        writes = WriteBehind()
        try:
            if run.incident_id and run.incident is None:
                run.incident, _ = run_all(lambda: self.ctx.sentinel.get_incident(run.incident_id),
                                          lambda: self._look_up(run, writes))
            else:
                self._look_up(run, writes)
            written, label, _, _ = run_all(lambda: self._comment(run), lambda: self._label(run),
                                           lambda: self._defer(run), writes.wait)
        finally:
            writes.close()  # never leave a write running behind the answer
        summary = self._summary(run, written, label)
        summary["virustotalCalls"] = self.vt.calls - calls_before
        return summary

    def _look_up(self, run: Run, writes: WriteBehind) -> None:
        """Verdicts for ``run.public``: cache reads in batches, then VirusTotal ``pool`` at a time. After the first
        error no look-up starts; a quota answer defers the rest, any other error is the run's answer."""
        found, absent = self.cache.get_many(run.public, self.pool)
        run.verdicts.update({ip: (verdict, True) for ip, verdict in found.items()})
        missing = [ip for ip in run.public if ip not in found]
        outcomes = run_bounded(lambda ip: self.cache.fetch(ip, self.vt.lookup, writes, absent=ip in absent),
                               missing, self.pool, stop=lambda error: True)
        errors = []
        for outcome in outcomes:
            if outcome.ok:
                run.verdicts[outcome.item] = outcome.get()
            elif not isinstance(outcome.error, QuotaExceeded):
                errors.append(outcome.error)
        if errors:
            raise errors[0]
        run.deferred = [ip for ip in missing if ip not in run.verdicts]
        quota = next((o.error for o in outcomes if isinstance(o.error, QuotaExceeded)), None)
        if quota is not None:
            run.retry_hint = quota.retry_after or 0
            log.info("VirusTotal quota reached (%s): %d of %d look-ups deferred for %s", quota.code,
                     len(run.deferred), len(missing), run.label)

    def _defer(self, run: Run) -> None:
        if not run.deferred:
            return
        if run.gave_up:
            log.error("giving up VirusTotal lookups for %s after %d attempts", run.label, run.attempt)
            return
        delay = min(MAX_DEFER_DELAY, max(self.retry_seconds, run.retry_hint) * 2 ** min(run.attempt, 6))
        self.ctx.state.enqueue(DEFER_QUEUE, run.to_message() | {"attempt": run.attempt + 1}, delay_seconds=delay)
        log.info("deferred %d lookups for %s by %ss", len(run.deferred), run.label, delay)

    def _rows(self, run: Run) -> list[Row]:
        rows: list[Row] = []
        for ip in run.public:
            if ip in run.verdicts:
                rows.append(Row(ip, run.verdicts[ip][0]))
            elif run.gave_up:
                rows.append(Row(ip, note=f"failed: VirusTotal quota still exhausted after {run.attempt} attempts"))
            else:
                rows.append(Row(ip, note="pending: VirusTotal quota reached; a new comment gives the verdict "
                                         "when the deferred look-up runs"))
        rows += [Row(ip, note=f"skipped: {reason}") for ip, reason in run.skipped]  # unparseable values included
        return rows

    def _comment(self, run: Run) -> list[Written]:
        """The run's comment(s), each under an id derived from its content; none for a deferred round that is not
        finished (its comment comes when every address has a verdict or the run gives up)."""
        if not run.incident_id or (run.completion and run.deferred and not run.gave_up):
            return []
        rows = self._rows(run)
        if not rows:
            return []
        title = COMPLETION_TITLE if run.completion else TITLE
        parts = []
        for message in render(run.label, rows, self.thresholds, self.ttl / 3600, title=title):
            digest = hashlib.sha256(message.encode()).hexdigest()[:24]
            parts.append((comment_id(run.incident_id, "ip-reputation", digest), message))
        return self.ctx.comments.write_all(run.incident_id, parts, incident=run.incident)

    def _label(self, run: Run) -> str | None:
        malicious = any(v.verdict == "malicious" for v, _ in run.verdicts.values())
        if not (malicious and self.add_label and run.incident_id):
            return None
        current = run.incident if run.incident and run.incident.get("etag") else None
        self.ctx.sentinel.add_labels(run.incident_id, MALICIOUS_LABEL, current=current)
        return MALICIOUS_LABEL

    @staticmethod
    def _summary(run: Run, written: list[Written], label: str | None) -> dict[str, Any]:
        looked_up = [v.to_dict() | {"cached": cached} for v, cached in run.verdicts.values()]
        worst = next((name for name in VERDICTS if any(item["verdict"] == name for item in looked_up)), None)
        notes = [text for text in (notice_text(w) for w in written) if text]
        if not run.incident_id:
            comment_skipped = f"no incident id in the {run.subject} body: nothing to comment on"
        elif run.completion and run.deferred and not run.gave_up:
            comment_skipped = "deferred look-ups still pending: the comment comes when all are done"
        else:
            comment_skipped = "; ".join(notes) or None
        nothing = not run.public and not run.skipped and not run.invalid
        return {
            "incident": run.incident_id,
            "case": run.label,
            "complete": not run.deferred,
            "worstVerdict": worst,
            "maliciousCount": sum(1 for item in looked_up if item["verdict"] == "malicious"),
            "ips": looked_up,
            "skipped": [{"ip": ip, "reason": reason} for ip, reason in run.skipped],
            "invalid": run.invalid,
            "deferred": run.deferred,
            "comments": [w.comment_id for w in written if w.comment_id],
            "commentSkipped": comment_skipped,
            "label": label,
            "note": f"nothing to look up: the {run.subject} has no IP entities" if nothing else None,
        }
