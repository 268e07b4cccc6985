"""The pack's IP block list: what ``GET /api/response/blocklist`` serves to firewalls.

Table ``blocklist``: PartitionKey ``ip`` (one small partition, read whole by the feed), RowKey = the
address (compressed form; IPv6 colons are valid in keys). Columns ``address``, ``incident_id``,
``case_label`` (who blocked it first), ``created_at``, ``expires_at`` (epoch seconds), ``indicator_id``
(the Defender indicator beside it). Table Storage has no TTL: expiry is applied when reading, and an
expired row is replaced by the next block of that address.

Adding is a conditional insert (of two concurrent blocks one inserts, the other finds it); a block of
an address already listed only moves its expiry later, with an etag-guarded replace. The addresses of one
call are read with one query (``get_rows``) and written with one entity group transaction (``add_many``,
``remove_many``: the partition is shared), falling back to one row at a time if a row changed meanwhile.

The feed is an *external dynamic list*: plain text, one address per line, IPv4 then IPv6, nothing
else, which Palo Alto Networks (EDL "IP List"), Fortinet (external threat feed, "IP Address") and
Check Point (network feed, flat list) all read.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from core.state import StateStore, TransactionFailed, key_safe, op_create, op_delete, op_replace

log = logging.getLogger(__name__)

TABLE = "blocklist"
PARTITION = "ip"


@dataclass(frozen=True)
class BlockEntry:
    address: str
    incident_id: str
    case_label: str
    created_at: float
    expires_at: float
    indicator_id: str = ""

    @classmethod
    def from_row(cls, row: dict) -> BlockEntry:
        return cls(str(row.get("address") or row["RowKey"]), str(row.get("incident_id") or ""),
                   str(row.get("case_label") or ""), float(row.get("created_at") or 0),
                   float(row.get("expires_at") or 0), str(row.get("indicator_id") or ""))

    def row(self) -> dict:
        return {"PartitionKey": PARTITION, "RowKey": key_safe(self.address), "address": self.address,
                "incident_id": self.incident_id, "case_label": self.case_label, "created_at": self.created_at,
                "expires_at": self.expires_at, "indicator_id": self.indicator_id}


class BlockList:
    def __init__(self, store: StateStore, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock

    def get(self, address: str) -> BlockEntry | None:
        """The listed, unexpired entry of ``address``, or None."""
        row = self.store.get(TABLE, PARTITION, key_safe(address))
        entry = BlockEntry.from_row(row) if row else None
        return entry if entry and entry.expires_at > self.clock() else None

    def add(self, entry: BlockEntry, attempts: int = 3) -> str:
        """``added``, ``renewed`` (expiry moved later) or ``present`` (already listed at least as long)."""
        for _ in range(attempts):
            if self.store.insert_if_absent(TABLE, entry.row()):
                return "added"
            row = self.store.get(TABLE, PARTITION, key_safe(entry.address))
            if row is None:
                continue  # removed in between: insert again
            merged, result = self._merged(entry, BlockEntry.from_row(row))
            if merged is None or self.store.replace_if_unchanged(TABLE, merged.row(), row["_etag"]):
                return result
        return "present"

    def get_rows(self, addresses: list[str]) -> dict[str, dict]:
        """The stored rows (expired ones too, with their etags) of ``addresses``, by address."""
        rows = self.store.get_many(TABLE, PARTITION, [key_safe(a) for a in addresses])
        return {a: rows[key_safe(a)] for a in addresses if key_safe(a) in rows}

    def listed(self, row: dict | None) -> BlockEntry | None:
        """The unexpired entry a row holds, or None."""
        entry = BlockEntry.from_row(row) if row else None
        return entry if entry and entry.expires_at > self.clock() else None

    def add_many(self, entries: list[BlockEntry], rows: dict[str, dict]) -> dict[str, str]:
        """Like ``add`` for several addresses whose current ``rows`` were read (``get_rows``): one transaction;
        ``added``, ``renewed`` or ``present`` per address."""
        outcome: dict[str, str] = {}
        ops = []
        for entry in entries:
            row = rows.get(entry.address)
            if row is None:
                ops.append(op_create(entry.row()))
                outcome[entry.address] = "added"
                continue
            merged, result = self._merged(entry, BlockEntry.from_row(row))
            outcome[entry.address] = result
            if merged is not None:
                ops.append(op_replace(merged.row(), row["_etag"]))
        if not ops:
            return outcome
        try:
            self.store.transaction(TABLE, ops)
        except TransactionFailed:  # a row changed since it was read: one at a time, each re-read
            return {entry.address: self.add(entry) for entry in entries}
        return outcome

    def _merged(self, entry: BlockEntry, current: BlockEntry) -> tuple[BlockEntry | None, str]:
        """What to store when ``entry`` is added over ``current``: None when the current one already lasts."""
        if current.expires_at > self.clock() and current.expires_at >= entry.expires_at:
            return None, "present"
        keep_first = current.expires_at > self.clock()  # an unexpired entry keeps who blocked it first
        merged = BlockEntry(entry.address, current.incident_id if keep_first else entry.incident_id,
                            current.case_label if keep_first else entry.case_label,
                            current.created_at if keep_first else entry.created_at, entry.expires_at,
                            entry.indicator_id or current.indicator_id)
        return merged, "renewed" if keep_first else "added"

    def remove_many(self, rows: dict[str, dict]) -> None:
        """Delete the given rows (read by ``get_rows``) in one transaction."""
        ops = [op_delete(PARTITION, key_safe(address), row["_etag"]) for address, row in rows.items()]
        if not ops:
            return
        try:
            self.store.transaction(TABLE, ops)
        except TransactionFailed:
            for address in rows:
                self.remove(address)

    def remove(self, address: str) -> bool:
        """Delete; False when the address was not listed (or only expired)."""
        row = self.store.get(TABLE, PARTITION, key_safe(address))
        if row is None:
            return False
        self.store.delete(TABLE, PARTITION, key_safe(address))
        return BlockEntry.from_row(row).expires_at > self.clock()

    def active(self) -> list[BlockEntry]:
        now = self.clock()
        entries = [BlockEntry.from_row(row) for row in self.store.query(TABLE, "PartitionKey eq @p", {"p": PARTITION})]
        return [e for e in entries if e.expires_at > now]


def render_edl(entries: list[BlockEntry]) -> str:
    """One address per line, IPv4 before IPv6, sorted, ending with a newline (empty list: empty body)."""
    addresses = sorted({ipaddress.ip_address(e.address) for e in entries}, key=lambda ip: (ip.version, ip))
    return "".join(f"{ip.compressed}\n" for ip in addresses)


__all__ = ["PARTITION", "TABLE", "BlockEntry", "BlockList", "render_edl"]
