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

Seeing the SOC's allow indicators needs ``Ti.ReadWrite.All``: with ``Ti.ReadWrite`` Defender lists only the
indicators this application created, so an exclusion made in the portal (or by a TI connector) would be
invisible and its address blocked (docs/permissions.md).

Calls: the addresses' leases and the incident's blast-radius budget in one Table transaction; the indicator
reads side by side (one per address: Defender's OData has no documented ``or``); one indicator write for
the call: a submit for one address, the Import Indicators API for several (one call instead of one per
address; its own limit of 30 calls a minute, against 100 for submits, is why one address still submits);
the block-list rows read with one query and written with one transaction.
"""

from __future__ import annotations

import ipaddress
import logging
from datetime import UTC, datetime, timedelta

from core.case import Case
from core.concurrency import run_all
from core.context import Context
from core.errors import PackError
from response.blocklist import BlockEntry, BlockList
from response.indicators import BLOCKING, RENEW_SLACK_SECONDS, Block, body, iso, parse_time, write
from response.mde import DefenderClient, DefenderRejected
from response.run import ResponseRun

log = logging.getLogger(__name__)

# Documentation ranges (RFC 5737, RFC 3849): never seen in real telemetry; the samples, demo and tests use
# them as public addresses, so they are blockable here as they are looked up by the enrichment.
DOCUMENTATION = tuple(ipaddress.ip_network(n) for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24",
                                                         "2001:db8::/32"))


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
        run.subjects = [ip.address for ip in run.case.ips]
        run.skip("ip")  # no address, or one that does not parse (Case.skipped)
        run.require("IP", run.case.ips)
        addresses = []
        for ip in run.case.ips:
            reason = not_blockable(ip.address)
            if reason:
                run.refuse(ip.address, reason)
            elif ip.address not in addresses:
                addresses.append(ip.address)
        error: PackError | None = None
        expires = datetime.now(UTC) + timedelta(hours=self.hours)
        try:
            run.take("ip", addresses, what="IP addresses")
            indicators, rows = run_all(
                lambda: run.each(addresses, lambda address: self.mde.indicators_for(address, "IpAddress")),
                lambda: self.blocklist.get_rows(addresses) if addresses else {})
            found = dict(zip(addresses, indicators, strict=True))
            if action == "block-ip":
                self._block(run, addresses, found, rows, expires)
            else:
                self._unblock(run, addresses, found, rows)
        except PackError as exc:
            error = exc
        return run.close(error, expiresAt=iso(expires) if action == "block-ip" else None)

    def _block(self, run: ResponseRun, addresses: list[str], found: dict[str, list[dict]], rows: dict[str, dict],
               expires: datetime) -> None:
        plans: dict[str, tuple[dict | None, bool]] = {}  # address -> (indicator to keep or None, renewal?)
        outcome: dict[str, tuple] = {}  # address -> arguments of run.add, in the addresses' order at the end
        for address in addresses:
            indicators = found[address]
            allowed = [i for i in indicators if i.get("action") == "Allowed"]
            if allowed:
                outcome[address] = ("refused", f"Defender indicator {allowed[0].get('id')} allows this address "
                                               "(a SOC exclusion): not blocked", [str(allowed[0].get("id", ""))])
                continue
            blocking = [i for i in indicators if i.get("action") in BLOCKING]
            current = max(blocking, key=lambda i: parse_time(i.get("expirationTime")) or expires, default=None)
            current_expiry = parse_time(current.get("expirationTime")) if current else None
            fresh = current is not None and (current_expiry is None  # a block without expiry outlasts this one
                                             or current_expiry >= expires - timedelta(seconds=RENEW_SLACK_SECONDS))
            listed = self.blocklist.listed(rows.get(address))
            if fresh and listed is not None and listed.expires_at >= expires.timestamp() - RENEW_SLACK_SECONDS:
                assert current is not None
                until = iso(current_expiry) if current_expiry else "revoked"
                outcome[address] = ("already", f"blocked until {until}", [str(current.get("id", ""))])
            elif run.read_only:
                outcome[address] = ("would", f"Defender indicator AlertAndBlock and block-list entry until "
                                             f"{iso(expires)}", [])
            else:
                plans[address] = (current if fresh else None, current is not None and not fresh)
        submitted = write(self.mde, [body(run.case, Block(address, "IpAddress", "AlertAndBlock", expires, ""))
                                     for address, (kept, _) in plans.items() if kept is None])
        entries = []
        for address, (kept, _renewal) in plans.items():
            indicator = kept or submitted.get(address.lower())
            if isinstance(indicator, DefenderRejected):
                outcome[address] = ("failed", indicator)
                continue
            assert indicator is not None
            entries.append(BlockEntry(address, run.case.incident_id or "", run.case.label,
                                      datetime.now(UTC).timestamp(), expires.timestamp(), str(indicator.get("id", ""))))
        listings = self.blocklist.add_many(entries, rows)
        for entry in entries:
            kept, renewal = plans[entry.address]
            what = "renewed" if renewal else "indicator kept" if kept else "indicator created"
            outcome[entry.address] = ("done", f"blocked until {iso(expires)} ({what}; block list: "
                                              f"{listings[entry.address]})", [entry.indicator_id])
        for address in addresses:
            kind, *rest = outcome[address]
            if kind == "failed":
                run.failed(address, rest[0])
            else:
                run.add(address, kind, rest[0], rest[1])

    def _unblock(self, run: ResponseRun, addresses: list[str], found: dict[str, list[dict]],
                 rows: dict[str, dict]) -> None:
        blocking = {a: [str(i.get("id", "")) for i in found[a] if i.get("action") in BLOCKING] for a in addresses}
        listed = {a: self.blocklist.listed(rows.get(a)) for a in addresses}
        todo = [a for a in addresses if blocking[a] or listed[a] is not None]
        if not run.read_only:
            run.each([i for a in todo for i in blocking[a]], self.mde.delete_indicator)
            self.blocklist.remove_many({a: rows[a] for a in todo if a in rows})
        for address in addresses:
            ids = blocking[address]
            if address not in todo:
                run.add(address, "already", "not blocked (no blocking indicator, not on the block list)")
            elif run.read_only:
                run.add(address, "would", "delete the blocking indicator(s) and the block-list entry", ids)
            else:
                run.add(address, "done", f"unblocked: {len(ids)} indicator(s) deleted"
                        + (", block-list entry removed" if listed[address] else ""), ids)


__all__ = ["IpResponse", "not_blockable"]
