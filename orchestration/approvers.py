"""Who may decide an approval: ``APPROVERS`` entries (UPNs, user object ids, group object ids) and the people
behind them.

Asking needs people with a mailbox: a UPN entry is looked up (a guest's mail differs from their UPN; an entry
Graph does not know is mailed as written), a GUID entry is a user or else a group whose users (nested groups
included) are each asked. Deciding needs the signed-in person to be an approver *now*: an entry names their
object id, UPN or mail, or a group entry contains them (Graph ``checkMemberGroups``, transitive). Removing
someone from ``APPROVERS`` or from the group takes their decisions away at once, links already mailed
included.
"""

from __future__ import annotations

import re

from core.directory import Directory, Person
from core.errors import BadRequest, ConfigurationError
from core.principal import GUID, Principal


class Approvers:
    def __init__(self, ctx) -> None:
        self.ctx = ctx
        self._directory: Directory | None = None

    @property
    def directory(self) -> Directory:
        if self._directory is None:
            self._directory = Directory(self.ctx.session, self.ctx.tokens, str(self.ctx.settings["GRAPH_ENDPOINT"]))
        return self._directory

    def configured(self) -> frozenset[str]:
        entries = self.ctx.settings["APPROVERS"] or frozenset()
        if not entries:
            raise ConfigurationError("setting APPROVERS is empty: nobody may decide approvals")
        return entries  # type: ignore[return-value]

    def chosen(self, raw) -> list[str]:
        """The entries an approval asks: all of APPROVERS, or the subset the playbook names."""
        configured = self.configured()
        if raw is None:
            return sorted(configured)
        if isinstance(raw, str):
            raw = [part for part in re.split(r"[;,]", raw) if part.strip()]
        if not isinstance(raw, list) or not raw:
            raise BadRequest("approvers must be a non-empty list of entries from the APPROVERS setting")
        chosen = {str(item).strip().lower() for item in raw}
        unknown = sorted(chosen - configured)
        if unknown:
            raise BadRequest(f"approvers not in the APPROVERS setting: {', '.join(unknown)[:200]}")
        return sorted(chosen)

    def people(self, entries: list[str]) -> list[Person]:
        """The people behind the entries, each once."""
        found: dict[str, Person] = {}
        for entry in entries:
            if GUID.match(entry):
                user = self.directory.user(entry)
                members = [user] if user else self.directory.group_users(entry)
                if members is None:
                    raise ConfigurationError(f"APPROVERS entry {entry} is neither a user nor a group in Entra ID")
            else:
                members = [self.directory.user(entry) or Person(upn=entry, mail=entry)]
            for person in members:
                found.setdefault(person.key, person)
        if not found:
            raise ConfigurationError("the APPROVERS groups have no members: nobody can be asked")
        return sorted(found.values(), key=lambda p: p.key)

    def allows(self, principal: Principal, entries: list[str]) -> bool:
        """Whether the signed-in person is, right now, one of ``entries`` (still configured ones only)."""
        return self.allows_names(principal.identifiers(), principal.object_id, entries)

    def allows_names(self, names: set[str], object_id: str, entries: list[str]) -> bool:
        live = [e for e in entries if e in self.configured()]
        if names & set(live):
            return True
        groups = [e for e in live if GUID.match(e) and e != object_id]
        return bool(object_id and groups) and bool(self.directory.member_of(object_id, groups))


def matches(person: Person, principal: Principal) -> bool:
    """The signed-in person is the one a personal link was sent to."""
    if person.id and principal.object_id:
        return person.id == principal.object_id
    return bool(person.names() & principal.identifiers())


__all__ = ["Approvers", "matches"]
