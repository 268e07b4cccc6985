"""What every Defender indicator the pack writes has in common: its body, its expiry, who owns it, one write.

Facts (Defender for Endpoint API reference, Indicator resource type and Submit / Import Indicators APIs):
- the pack's indicators name the incident in ``title`` and ``description``, carry ``expirationTime`` and
  ``generateAlert``, and set ``application`` to ``sentinel-playbooks`` ("The application associated with the
  indicator. This field only works for new indicators": Defender keeps the first writer's value). ``ours``
  tells the pack's indicators from the SOC's and other applications' by that field or by the description the
  pack writes (an expired indicator of someone else that the pack rewrote keeps its ``application``);
- blocking actions: ``Block``, ``BlockAndRemediate`` (files and certificates only) and the older
  ``AlertAndBlock`` ("The prior response actions (AlertAndBlock, and Alert) will be supported until January
  2022", yet Microsoft's own Restrict-MDE* Sentinel playbooks still send it, and block-ip does);
- one write per call: a submit for one indicator (100 calls a minute), the Import Indicators API for several
  (one call instead of one per value, up to 500; its own limit is 30 calls a minute). Both submit *or update*
  by value and type, so even a race cannot create two indicators of one value.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from core.case import Case
from response.mde import DefenderClient, DefenderRejected

APPLICATION = "sentinel-playbooks"
MARK = "Blocked by the sentinel-playbooks response playbook"
BLOCKING = frozenset({"AlertAndBlock", "Block", "BlockAndRemediate"})
ALLOWED = "Allowed"
RENEW_SLACK_SECONDS = 3600  # a retry minutes later must not rewrite the indicator


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def expiry(indicator: dict) -> datetime | None:
    """When the indicator stops applying; None: never."""
    return parse_time(indicator.get("expirationTime"))


def active(indicator: dict, now: datetime | None = None) -> bool:
    until = expiry(indicator)
    return until is None or until > (now or datetime.now(UTC))


def ours(indicator: dict) -> bool:
    """An indicator the pack created (or rewrote after it expired): what its undo may delete."""
    return indicator.get("application") == APPLICATION or str(indicator.get("description") or "").startswith(MARK)


def until_text(indicator: dict) -> str:
    until = expiry(indicator)
    return iso(until) if until else "no expiry"


@dataclass(frozen=True)
class Block:
    """The indicator the pack asks for: a value, its type and action, until when."""

    value: str
    indicator_type: str
    action: str
    expires: datetime
    what: str  # how the title names the kind: "", "file", "URL", "domain"


def body(case: Case, block: Block) -> dict:
    """The Submit / Import Indicator body of ``block``, naming the incident (title <= 200, description <= 1000)."""
    what = f"{block.what} " if block.what else ""
    title = f"Sentinel {case.label}: block {what}{block.value}"
    description = (f"{MARK} for Microsoft Sentinel {case.label}" + (f": {case.title}" if case.title else "")
                   + (f" ({case.incident_id.rsplit('/', 1)[-1]})" if case.incident_id else "") + ".")
    return {
        "indicatorValue": block.value, "indicatorType": block.indicator_type, "action": block.action,
        "title": title[:200], "description": description[:1000], "expirationTime": iso(block.expires),
        "severity": case.severity or "Medium", "generateAlert": True, "application": APPLICATION,
        "recommendedActions": "Review the Sentinel incident before removing this block.",
    }


def write(mde: DefenderClient, bodies: list[dict]) -> dict[str, dict | DefenderRejected]:
    """One write for every indicator of the call: a submit for one, an import for several. The indicator (or
    why Defender refused it) per value, lower-case."""
    if not bodies:
        return {}
    if len(bodies) == 1:
        value = str(bodies[0]["indicatorValue"]).lower()
        try:
            return {value: mde.submit_indicator(bodies[0])}
        except DefenderRejected as exc:
            return {value: exc}
    results = mde.import_indicators(bodies)
    out: dict[str, dict | DefenderRejected] = {}
    for item in bodies:
        value = str(item["indicatorValue"])
        result = results.get(value.lower())
        if result is None or result.get("isFailed"):
            reason = (result or {}).get("failureReason") or "no result for this indicator"
            out[value.lower()] = DefenderRejected(f"Defender for Endpoint did not import the indicator of "
                                                  f"{value[:200]}: {str(reason)[:200]}")
        else:
            out[value.lower()] = result
    return out


__all__ = ["ALLOWED", "APPLICATION", "BLOCKING", "MARK", "RENEW_SLACK_SECONDS", "Block", "active", "body", "expiry",
           "iso", "ours", "parse_time", "until_text", "write"]
