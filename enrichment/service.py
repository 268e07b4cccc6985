"""IP reputation enrichment of one Case: look up, cache, defer on quota, comment, label.

The run is idempotent: verdicts come from the shared cache when fresh, the comment id is
derived from the incident and its set of addresses (a retried or repeated run overwrites the
same comment), the label is added only if missing, and deferred work completes that same
comment. When VirusTotal's quota runs out mid-run, the remaining addresses go to the
``vt-deferred`` queue and the comment shows them as pending until the queued run fills them in.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from typing import Any

from core.case import Case
from core.context import Context
from core.sentinel import comment_id
from enrichment.cache import VerdictCache
from enrichment.ip_filter import partition
from enrichment.report import Row, render
from enrichment.virustotal import VERDICTS, IpVerdict, QuotaExceeded, VerdictThresholds, VirusTotalClient

log = logging.getLogger(__name__)

DEFER_QUEUE = "vt-deferred"
MALICIOUS_LABEL = "VirusTotal: malicious"
MAX_DEFER_ATTEMPTS = 30  # with backoff capped at an hour: more than a day of retries
MAX_DEFER_DELAY = 3600


@dataclass
class Run:
    """One enrichment pass over a fixed set of addresses."""

    incident_id: str | None
    label: str
    public: list[str]
    skipped: list[tuple[str, str]]
    invalid: list[str] = field(default_factory=list)
    verdicts: dict[str, tuple[IpVerdict, bool]] = field(default_factory=dict)
    deferred: list[str] = field(default_factory=list)
    attempt: int = 0

    @property
    def key(self) -> str:
        """Same addresses -> same key -> same comment id."""
        material = "|".join(sorted(self.public) + sorted(ip for ip, _ in self.skipped) + sorted(self.invalid))
        return hashlib.sha256(material.encode()).hexdigest()[:16]

    def to_message(self) -> dict[str, Any]:
        return {"incident_id": self.incident_id, "label": self.label, "public": self.public,
                "skipped": self.skipped, "invalid": self.invalid, "attempt": self.attempt}

    @classmethod
    def from_message(cls, message: dict[str, Any]) -> Run:
        return cls(incident_id=message.get("incident_id"), label=str(message.get("label", "")),
                   public=list(message["public"]), skipped=[tuple(s) for s in message.get("skipped", [])],
                   invalid=list(message.get("invalid", [])), attempt=int(message.get("attempt", 0)))


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

    # -- entry points -------------------------------------------------------------------------
    def enrich(self, case: Case) -> dict[str, Any]:
        case = self.ctx.with_entities(case)
        public, skipped = partition([ip.address for ip in case.ips])
        run = Run(case.incident_id, case.label, public, skipped, list(case.invalid_ips))
        return self._complete(run)

    def resume(self, message: dict[str, Any]) -> dict[str, Any]:
        """Finish a deferred run (queue trigger)."""
        return self._complete(Run.from_message(message))

    # -- the run ------------------------------------------------------------------------------
    def _complete(self, run: Run) -> dict[str, Any]:
        calls_before = self.vt.calls
        for position, ip in enumerate(run.public):
            try:
                run.verdicts[ip] = self.cache.get_or_fetch(ip, self.vt.lookup)
            except QuotaExceeded as quota:
                run.deferred = run.public[position:]
                self._defer(run, quota)
                break
        comments = self._comment(run)
        label = self._label(run)
        summary = self._summary(run, comments, label)
        summary["virustotalCalls"] = self.vt.calls - calls_before
        return summary

    def _defer(self, run: Run, quota: QuotaExceeded) -> None:
        if run.attempt >= MAX_DEFER_ATTEMPTS:
            log.error("giving up VirusTotal lookups for %s after %d attempts", run.label, run.attempt)
            return
        delay = min(MAX_DEFER_DELAY, max(self.retry_seconds, quota.retry_after or 0) * 2 ** min(run.attempt, 6))
        message = run.to_message() | {"attempt": run.attempt + 1}
        self.ctx.state.enqueue(DEFER_QUEUE, message, delay_seconds=delay)
        log.info("deferred %d lookups for %s by %ss (%s)", len(run.deferred), run.label, delay, quota.code)

    def _rows(self, run: Run) -> list[Row]:
        rows: list[Row] = []
        gave_up = run.attempt >= MAX_DEFER_ATTEMPTS
        for ip in run.public:
            if ip in run.verdicts:
                rows.append(Row(ip, run.verdicts[ip][0]))
            elif gave_up:
                rows.append(Row(ip, note=f"failed: VirusTotal quota still exhausted after {run.attempt} attempts"))
            else:
                rows.append(Row(ip, note="pending: VirusTotal quota reached; this comment is completed "
                                         "when the deferred lookup runs"))
        rows += [Row(ip, note=f"skipped: {reason}") for ip, reason in run.skipped]
        rows += [Row(raw, note="skipped: not an IP address") for raw in run.invalid]
        return rows

    def _comment(self, run: Run) -> list[str]:
        if not run.incident_id:
            return []
        rows = self._rows(run)
        if not rows:
            return []
        ids = []
        for part, message in enumerate(render(run.label, rows, self.thresholds, self.ttl / 3600)):
            cid = comment_id(run.incident_id, "ip-reputation", run.key, str(part))
            self.ctx.sentinel.put_comment(run.incident_id, cid, message)
            ids.append(cid)
        return ids

    def _label(self, run: Run) -> str | None:
        malicious = any(v.verdict == "malicious" for v, _ in run.verdicts.values())
        if not (malicious and self.add_label and run.incident_id):
            return None
        self.ctx.sentinel.add_labels(run.incident_id, MALICIOUS_LABEL)
        return MALICIOUS_LABEL

    @staticmethod
    def _summary(run: Run, comments: list[str], label: str | None) -> dict[str, Any]:
        looked_up = [v.to_dict() | {"cached": cached} for v, cached in run.verdicts.values()]
        worst = next((name for name in VERDICTS if any(item["verdict"] == name for item in looked_up)), None)
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
            "comments": comments,
            "commentSkipped": None if run.incident_id else "no incident id in the payload: nothing to comment on",
            "label": label,
        }
