"""Block (and unblock) the incident's IP addresses: a Defender for Endpoint indicator plus the block list.

Block, for each address that may be blocked (global unicast; the documentation ranges the samples use
stand in for public addresses):
- the Defender indicators of the address are read first: one that *allows* it (a SOC exclusion) wins,
  and the address is refused; a blocking one still valid is kept (renewed when it would expire sooner
  than this block); otherwise one is submitted (``IpAddress``, ``AlertAndBlock``, title and
  description naming the incident, ``expirationTime`` = now + ``BLOCK_IP_EXPIRY_HOURS``). Defender's
  submit is itself an upsert by value, so even a race cannot create two;
- the address is added to the pack's block list (conditional insert, see ``response.blocklist``).
Unblock deletes the blocking indicators of the address and its block-list entry; an address blocked
nowhere is reported ``already`` (not blocked).
"""

from __future__ import annotations

import ipaddress
import logging
from datetime import UTC, datetime, timedelta

from core.case import Case
from core.context import Context
from core.errors import PackError
from response.blocklist import BlockEntry, BlockList
from response.mde import DefenderClient, DefenderRejected
from response.run import ResponseRun

log = logging.getLogger(__name__)

BLOCKING = frozenset({"AlertAndBlock", "Block", "BlockAndRemediate"})
# Documentation ranges (RFC 5737, RFC 3849): never seen in real telemetry; the samples, demo and tests use
# them as public addresses, so they are blockable here as they are looked up by the enrichment.
DOCUMENTATION = tuple(ipaddress.ip_network(n) for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24",
                                                         "2001:db8::/32"))
RENEW_SLACK_SECONDS = 3600  # a retry minutes later must not rewrite the indicator


def not_blockable(address: str) -> str | None:
    """Why ``address`` must not be blocked (it is not a public unicast address), or None."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_multicast:  # "global" in the IANA registry, yet never a host to block
        return "multicast address: not a public unicast address"
    if any(ip in net for net in DOCUMENTATION if net.version == ip.version) or ip.is_global:
        return None
    for reason, flag in (("loopback", ip.is_loopback), ("link-local", ip.is_link_local),
                         ("unspecified", ip.is_unspecified),
                         ("private", ip.is_private), ("reserved", ip.is_reserved)):
        if flag:
            return f"{reason} address: not a public address"
    return "not a globally routable address"


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


class IpResponse:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.mde = DefenderClient(ctx.session, ctx.tokens, str(ctx.settings["MDE_ENDPOINT"]))
        self.blocklist = BlockList(ctx.state)
        self.hours = int(ctx.settings["BLOCK_IP_EXPIRY_HOURS"])

    def block(self, case: Case, *, dry_run: bool = False) -> dict:
        return self._run(case, "block-ip", "Block IP addresses (Defender for Endpoint indicator and firewall block "
                                           "list)", dry_run)

    def unblock(self, case: Case, *, dry_run: bool = False) -> dict:
        return self._run(case, "unblock-ip", "Unblock IP addresses", dry_run)

    def _run(self, case: Case, action: str, title: str, dry_run: bool) -> dict:
        run = ResponseRun(self.ctx, case, action=action, title=title, dry_run_requested=dry_run)
        run.subjects = [ip.address for ip in run.case.ips] + list(run.case.invalid_ips)
        run.require("IP")
        for raw in run.case.invalid_ips:
            run.refuse(raw, "not an IP address")
        addresses = []
        for ip in run.case.ips:
            reason = not_blockable(ip.address)
            if reason:
                run.refuse(ip.address, reason)
            else:
                addresses.append(ip.address)
        error: PackError | None = None
        expires = datetime.now(UTC) + timedelta(hours=self.hours)
        try:
            run.limit(addresses, "IP addresses")
            for address in addresses:
                with run.locked("ip", [address]):
                    if action == "block-ip":
                        self._block_one(run, address, expires)
                    else:
                        self._unblock_one(run, address)
        except PackError as exc:
            error = exc
        return run.close(error, expiresAt=_iso(expires) if action == "block-ip" else None)

    def _block_one(self, run: ResponseRun, address: str, expires: datetime) -> None:
        indicators = self.mde.indicators_for(address, "IpAddress")
        allowed = [i for i in indicators if i.get("action") == "Allowed"]
        if allowed:
            run.refuse(address, f"Defender indicator {allowed[0].get('id')} allows this address (a SOC exclusion): "
                                "not blocked", ids=[str(allowed[0].get("id", ""))])
            return
        blocking = [i for i in indicators if i.get("action") in BLOCKING]
        current = max(blocking, key=lambda i: _parse_time(i.get("expirationTime")) or expires, default=None)
        current_expiry = _parse_time(current.get("expirationTime")) if current else None
        fresh = current is not None and (current_expiry is None  # a block without expiry outlasts this one
                                         or current_expiry >= expires - timedelta(seconds=RENEW_SLACK_SECONDS))
        listed = self.blocklist.get(address)
        listed_fresh = listed is not None and listed.expires_at >= expires.timestamp() - RENEW_SLACK_SECONDS
        if fresh and listed_fresh:
            run.add(address, "already", f"blocked until {_iso(current_expiry) if current_expiry else 'revoked'}",
                    [str(current.get("id", ""))] if current else [])
            return
        if run.dry_run:
            run.add(address, "would", f"Defender indicator AlertAndBlock and block-list entry until {_iso(expires)}")
            return
        try:
            indicator = current if fresh else self.mde.submit_indicator(self._indicator(run.case, address, expires))
        except DefenderRejected as exc:
            run.failed(address, exc)
            return
        assert indicator is not None
        indicator_id = str(indicator.get("id", ""))
        listing = self.blocklist.add(BlockEntry(address, run.case.incident_id or "", run.case.label,
                                                datetime.now(UTC).timestamp(), expires.timestamp(), indicator_id))
        what = "renewed" if current is not None and not fresh else "indicator kept" if fresh else "indicator created"
        run.add(address, "done", f"blocked until {_iso(expires)} ({what}; block list: {listing})", [indicator_id])

    def _indicator(self, case: Case, address: str, expires: datetime) -> dict:
        title = f"Sentinel {case.label}: block {address}"
        description = (f"Blocked by the sentinel-playbooks response playbook for Microsoft Sentinel {case.label}"
                       + (f": {case.title}" if case.title else "")
                       + (f" ({case.incident_id.rsplit('/', 1)[-1]})" if case.incident_id else "") + ".")
        return {
            "indicatorValue": address, "indicatorType": "IpAddress", "action": "AlertAndBlock",
            "title": title[:200], "description": description[:1000], "expirationTime": _iso(expires),
            "severity": case.severity or "Medium", "generateAlert": True,
            "recommendedActions": "Review the Sentinel incident before removing this block.",
        }

    def _unblock_one(self, run: ResponseRun, address: str) -> None:
        blocking = [i for i in self.mde.indicators_for(address, "IpAddress") if i.get("action") in BLOCKING]
        listed = self.blocklist.get(address)
        if not blocking and listed is None:
            run.add(address, "already", "not blocked (no blocking indicator, not on the block list)")
            return
        ids = [str(i.get("id", "")) for i in blocking]
        if run.dry_run:
            run.add(address, "would", "delete the blocking indicator(s) and the block-list entry", ids)
            return
        for indicator_id in ids:
            self.mde.delete_indicator(indicator_id)
        self.blocklist.remove(address)
        run.add(address, "done", f"unblocked: {len(ids)} indicator(s) deleted"
                + (", block-list entry removed" if listed else ""), ids)


__all__ = ["IpResponse", "not_blockable"]
