"""What "Block" will touch, named before anyone decides: users, hosts, IPs, each with its verdict or reason.

The approval computes the list once, when it asks; the mail, the channel notice and the page show it; the
decision callback carries it, and the compromised-user playbook's Block branch posts exactly these targets
(as alert-format entities, ``{"incidentArmId": ..., "Entities": [...]}``, which core/case.py reads) to the
response routes. So what the approver saw is what is acted on, and nothing else.

IPs are proposed for blocking only when their latest VirusTotal verdict (core/verdicts.py, the enrichment's
cache) is one of ``BLOCK_IP_VERDICTS`` (default malicious, suspicious); every other IP is listed as
"not blocked" with the reason (its verdict, or none: the enrichment skips private addresses). Hosts are proposed only
when the playbook isolates machines. No kind offers more targets than the incident's blast-radius budget still
allows (``core.radius``: ``RESPONSE_MAX_TARGETS`` distinct targets per action and incident, across calls); the
rest are listed as not touched, with that reason. The response routes still apply their guardrails (protected
accounts and machines, the blast-radius cap, DRY_RUN) when they act.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from core.case import AccountEntity, Case, HostEntity
from core.verdicts import latest_verdict


@dataclass
class Targets:
    users: list[dict[str, str]] = field(default_factory=list)
    hosts: list[dict[str, str]] = field(default_factory=list)
    ips: list[dict[str, str]] = field(default_factory=list)
    not_blocked: list[dict[str, str]] = field(default_factory=list)
    not_touched: list[dict[str, str]] = field(default_factory=list)
    entities: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: {"users": [], "hosts": [], "ips": []})

    def to_dict(self) -> dict[str, Any]:
        return {"users": self.users, "hosts": self.hosts, "ips": self.ips, "notBlocked": self.not_blocked,
                "notTouched": self.not_touched, "entities": self.entities}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Targets:
        data = data or {}
        return cls(users=list(data.get("users") or []), hosts=list(data.get("hosts") or []),
                   ips=list(data.get("ips") or []), not_blocked=list(data.get("notBlocked") or []),
                   not_touched=list(data.get("notTouched") or []),
                   entities=dict(data.get("entities") or {"users": [], "hosts": [], "ips": []}))

    def sections(self) -> list[tuple[str, list[str]]]:
        """(title, lines) for pages, mails and notices; empty groups say so."""
        return [
            ("Users to confirm compromised, revoke and disable", [u["label"] for u in self.users] or ["none"]),
            ("Hosts to isolate", [h["label"] for h in self.hosts] or ["none (isolation is off in this playbook)"]),
            ("IPs to block", [f"{i['address']}: {i['detail']}" for i in self.ips] or ["none"]),
            ("Not blocked / not touched", [f"{i['address']}: {i['reason']}" for i in self.not_blocked]
             + [f"{t['target']}: {t['reason']}" for t in self.not_touched] or ["nothing"]),
        ]

    def summary_line(self) -> str:
        return (f"{len(self.users)} user(s), {len(self.hosts)} host(s), {len(self.ips)} IP(s) to block; "
                f"{len(self.not_blocked)} IP(s) not blocked")


def _account_entity(account: AccountEntity) -> dict[str, Any]:
    entity: dict[str, Any] = {"Type": "account"}
    for key, value in (("Name", account.name), ("UPNSuffix", account.upn_suffix), ("AadUserId", account.aad_user_id),
                       ("DisplayName", account.display_name)):
        if value:
            entity[key] = value
    return entity


def _host_entity(host: HostEntity) -> dict[str, Any]:
    entity: dict[str, Any] = {"Type": "host", "HostName": host.host_name}
    for key, value in (("DnsDomain", host.dns_domain), ("MdatpDeviceId", host.mde_device_id),
                       ("AzureID", host.aad_device_id)):
        if value:
            entity[key] = value
    return entity


# The response actions the Block branch runs per kind (core.radius action names): a kind offers no more targets
# than the tightest of its actions' budgets.
BUDGETED_ACTIONS = {
    "users": ("entra-confirm-compromised", "entra-revoke-sessions", "entra-disable-user"),
    "hosts": ("mde-isolate",),
    "ips": ("block-ip",),
}


def compute(case: Case, store, block_verdicts: frozenset[str], *, isolate: bool,
            remaining: Callable[[str], int] | None = None) -> Targets:
    """The targets of Block for ``case`` (its entities read already), verdicts from the cache in ``store``;
    ``remaining(action)`` is the incident's blast-radius budget left for a response action (None: no budget)."""
    targets = Targets()
    _propose(case, store, block_verdicts, isolate, targets)
    if remaining is not None:
        _within_budget(targets, remaining)
    return targets


def _within_budget(targets: Targets, remaining: Callable[[str], int]) -> None:
    """Keep the first ``budget`` targets of each kind; list the others as not touched, saying why."""
    for kind, actions in BUDGETED_ACTIONS.items():
        shown: list[dict[str, str]] = getattr(targets, kind)
        if not shown:
            continue
        budget = min(remaining(action) for action in actions)
        if len(shown) <= budget:
            continue
        for item in shown[budget:]:
            name = item.get("label") or item.get("address") or "?"
            targets.not_touched.append({"target": name, "reason": (
                f"blast-radius cap: this incident may reach {budget} more {kind} (RESPONSE_MAX_TARGETS per "
                "incident and action); decide on the rest in a later approval")})
        del shown[budget:]
        del targets.entities[kind][budget:]


def _propose(case: Case, store, block_verdicts: frozenset[str], isolate: bool, targets: Targets) -> None:
    for account in case.accounts:
        label = account.upn or account.name or account.aad_user_id or "?"
        if not (account.aad_user_id or account.upn):
            targets.not_touched.append({"target": f"account {label}", "reason": "no Entra object id or UPN: "
                                        "cannot be identified safely"})
            continue
        shown = f"{account.display_name} ({account.upn or account.aad_user_id})" if account.display_name else label
        targets.users.append({"upn": account.upn or "", "id": (account.aad_user_id or "").lower(), "label": shown})
        targets.entities["users"].append(_account_entity(account))
    for host in case.hosts:
        if not isolate:
            break
        targets.hosts.append({"name": host.host_name, "fqdn": host.fqdn, "mdeDeviceId": host.mde_device_id or "",
                              "label": host.fqdn + (f" (device {host.mde_device_id})" if host.mde_device_id else "")})
        targets.entities["hosts"].append(_host_entity(host))
    for ip in case.ips:
        address = ip.address
        verdict = latest_verdict(store, address)
        if verdict is None:  # the enrichment skips private and special addresses, so they never have one
            targets.not_blocked.append({"address": address, "verdict": "", "reason": "no VirusTotal verdict (a "
                                        "private or special address, or not looked up yet)"})
        elif verdict.verdict in block_verdicts:
            targets.ips.append({"address": address, "verdict": verdict.verdict,
                                "detail": f"VirusTotal {verdict.describe()}"})
            targets.entities["ips"].append({"Type": "ip", "Address": address})
        else:
            targets.not_blocked.append({"address": address, "verdict": verdict.verdict, "reason": (
                f"VirusTotal {verdict.describe()}; only {', '.join(sorted(block_verdicts)) or 'no'} verdicts are "
                "blocked (BLOCK_IP_VERDICTS)")})
    for raw in case.invalid_ips:
        targets.not_blocked.append({"address": raw, "verdict": "", "reason": "not an IP address"})


__all__ = ["Targets", "compute"]
