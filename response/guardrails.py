"""The safety rules every response action obeys, in one place.

- **Protected entities** (``PROTECTED_ACCOUNTS``, ``PROTECTED_MACHINES``): comma-separated, case-insensitive
  entries, each an exact value or an ``fnmatch`` pattern (``dc*.corp.contoso.com``, ``breakglass-*@contoso.com``).
  Machines match on the entity's host name, FQDN and device id and on the Defender machine's
  ``computerDnsName`` and id; an entry ``tag:<name>`` matches a Defender machine tag (``tag:Tier0``).
  Accounts match on the entity's UPN, object id and name and on the Entra user's UPN and id. A protected
  entity is never touched, not even looked up by a write; the refusal is audited like any outcome.
- **Blast radius** (``RESPONSE_MAX_TARGETS``): one action reaches at most that many distinct targets per incident
  within ``RESPONSE_RADIUS_WINDOW_HOURS``, across calls (after protected and unresolvable entities are set aside;
  core/radius.py keeps the count). More is refused as a whole: nothing is done, because acting on an arbitrary
  subset would be worse than acting on none.
- **Kill switch** (``DISABLED_ACTIONS``): a listed action answers 409 and does nothing (core/api.py).
- **Dry run** (``DRY_RUN``, or ``?dryRun=true`` on one call): everything is resolved and checked, nothing is
  changed, and the answer and the audit say what would have been done. A call can only ask for more safety:
  ``?dryRun=false`` does not override the setting.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase

from core.audit import AuditEntry
from core.errors import Conflict
from core.radius import BlastRadiusExceeded, cap_of
from core.settings import Settings

TAG_PREFIX = "tag:"
# Outcomes that mean "the target was not acted on because of a rule or an unresolvable entity".
REFUSED = frozenset({"refused"})


class ResponseRefused(Conflict):
    """Every target of the call was refused (protected, unknown or ambiguous): nothing was done."""

    code = "ResponseRefused"


@dataclass(frozen=True)
class Guardrails:
    protected_accounts: frozenset[str]
    protected_machines: frozenset[str]
    max_targets: int
    dry_run: bool

    @classmethod
    def from_settings(cls, settings: Settings, *, dry_run_requested: bool = False) -> Guardrails:
        max_targets = cap_of(settings)
        return cls(frozenset(settings["PROTECTED_ACCOUNTS"] or ()), frozenset(settings["PROTECTED_MACHINES"] or ()),
                   max_targets, bool(settings["DRY_RUN"]) or dry_run_requested)

    # -- protected entities -------------------------------------------------------------------
    @staticmethod
    def _match(rules: Iterable[str], values: Iterable[str | None]) -> str | None:
        candidates = [v.strip().lower() for v in values if v and v.strip()]
        for rule in sorted(rules):
            if rule.startswith(TAG_PREFIX):
                continue
            if any(fnmatchcase(value, rule) for value in candidates):
                return rule
        return None

    def machine_rule(self, *identifiers: str | None, tags: Iterable[str] = ()) -> str | None:
        """The PROTECTED_MACHINES entry that covers this machine, or None."""
        tag_set = {t.strip().lower() for t in tags if t}
        for rule in sorted(self.protected_machines):
            if rule.startswith(TAG_PREFIX) and any(fnmatchcase(t, rule[len(TAG_PREFIX):]) for t in tag_set):
                return rule
        names = list(identifiers)
        names += [n.split(".", 1)[0] for n in identifiers if n and "." in n]  # short name of an FQDN
        return self._match(self.protected_machines, names)

    def account_rule(self, *identifiers: str | None) -> str | None:
        """The PROTECTED_ACCOUNTS entry that covers this account, or None."""
        return self._match(self.protected_accounts, identifiers)

    # -- blast radius -------------------------------------------------------------------------
    def check_radius(self, count: int, what: str) -> None:
        if count > self.max_targets:
            raise BlastRadiusExceeded(
                f"{count} {what} in one call exceed RESPONSE_MAX_TARGETS={self.max_targets}: nothing was done; "
                "split the response or raise the limit deliberately")


def refusal_message(entries: Sequence[AuditEntry]) -> str | None:
    """When every target was refused, the message of the 409 that says why; else None. Skipped entities (rows
    that named no usable target) neither make a refusal nor prevent one."""
    targets = [e for e in entries if e.outcome != "skipped"]
    if targets and all(e.outcome in REFUSED for e in targets):
        return "nothing was done: " + "; ".join(f"{e.target}: {e.detail}" for e in entries)[:900]
    return None


__all__ = ["BlastRadiusExceeded", "Guardrails", "ResponseRefused", "refusal_message"]
