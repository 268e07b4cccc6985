"""Entra ID user actions on the incident's accounts: confirm compromised, revoke sessions, disable, enable.

Resolution of an Account entity to one Entra user: its ``aadUserId`` (object id) when present, else the
UPN built from ``accountName@upnSuffix``; an account with neither (an on-premises ``DOMAIN\\name``) is
refused: guessing a UPN could act on someone else. The user is read from Graph first (unknown: refused),
and protected accounts are checked on both the entity and the Entra user.

Idempotency, by the state of the target:
- confirm compromised: a user whose ``riskState`` is already ``confirmedCompromised`` is reported, not
  confirmed again; without an Entra ID P2 licence Identity Protection refuses: every user is reported
  ``unavailable`` with that reason and the call still succeeds, so the playbook goes on;
- disable: a user already disabled is reported (``already``), not an error; enable (the undo of disable, with
  the same guardrails, blast-radius budget and audit) mirrors it;
- revoke sessions: Graph keeps no trace a retry could check, so the pack does: table ``responseledger``
  (PartitionKey = the case, RowKey = ``revoke|<user id>``) is written after the revocation, and a retry
  of the same case finds it. An entity run outside any incident or alert has no case to key on: each
  such call revokes again, which is harmless (the user signs in once more).

Users are resolved and acted on side by side (``RESPONSE_POOL_SIZE``) through the process's Graph client.

Every Graph write is also noted *before* it is sent (``WriteLedger``): when Graph's answer is lost (a
timeout after the request went out) the retry tells from the user's state whether the write happened
(accountEnabled, riskState, or a signInSessionsValidFromDateTime at or after the request) and then
reports it done by this case instead of writing again or calling it "already in place".
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from core.case import AccountEntity, Case
from core.concurrency import run_bounded
from core.context import Context
from core.errors import PackError
from core.state import key_safe, op_merge
from response.graph import EntraClient, EntraUser, GraphDenied, LicenceRequired, shared_client
from response.run import GUID, ResponseRun

log = logging.getLogger(__name__)

LEDGER_TABLE = "responseledger"
CLOCK_SKEW_SECONDS = 5.0  # between Graph's clock and ours, when matching a revocation to our request
_UPN = re.compile(r"^[^@\s/\\?#%]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}$")


@dataclass(frozen=True)
class UserAction:
    name: str
    title: str
    verb: str  # the write ledger's name for its writes


CONFIRM = UserAction("entra-confirm-compromised", "Entra ID: confirm users compromised (Identity Protection)",
                     "confirm")
REVOKE = UserAction("entra-revoke-sessions", "Entra ID: revoke sign-in sessions", "revoke")
DISABLE = UserAction("entra-disable-user", "Entra ID: disable user accounts", "disable")
ENABLE = UserAction("entra-enable-user", "Entra ID: enable user accounts (undo of disable)", "enable")


def _identifier(account: AccountEntity) -> tuple[str | None, str]:
    """What to ask Graph for (object id, else UPN), or None and why not."""
    if account.aad_user_id:
        if not GUID.match(account.aad_user_id):
            return None, f"aadUserId {account.aad_user_id[:40]!r} is not an Entra object id"
        return account.aad_user_id.lower(), ""
    if account.upn:
        if not _UPN.match(account.upn):
            return None, f"{account.upn[:60]!r} is not a valid user principal name"
        return account.upn, ""
    return None, ("the account has neither an Entra object id (aadUserId) nor a UPN suffix: "
                  "cannot identify the Entra user safely")


class UserResponse:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def _graph(self) -> EntraClient:
        return shared_client(self.ctx.tokens, self.ctx.settings)

    def confirm_compromised(self, case: Case, *, dry_run: bool = False) -> dict:
        return self._run(case, CONFIRM, dry_run)

    def revoke_sessions(self, case: Case, *, dry_run: bool = False) -> dict:
        return self._run(case, REVOKE, dry_run)

    def disable(self, case: Case, *, dry_run: bool = False) -> dict:
        return self._run(case, DISABLE, dry_run)

    def enable(self, case: Case, *, dry_run: bool = False) -> dict:
        return self._run(case, ENABLE, dry_run)

    # -- one call -----------------------------------------------------------------------------
    def _run(self, case: Case, action: UserAction, dry_run: bool) -> dict:
        run = ResponseRun(self.ctx, case, action=action.name, title=action.title, dry_run_requested=dry_run)
        accounts = run.case.accounts
        run.subjects = [a.key for a in accounts]
        run.skip("account")
        run.require("Account", accounts)
        error: PackError | None = None
        try:
            graph = self._graph()
            # Leased by the entities' identifiers, so the user's state is read inside the lease; the budget is
            # spent on the Entra users they resolve to (an object id and a UPN of one user count once).
            run.take("user", [a.key for a in accounts], what="users", counted=[])
            users = self._resolve(run, graph, accounts)
            writes = WriteLedger(self.ctx, run.case, action.verb)
            plans = self._plan(run, graph, action, writes, users)
            self._spend(run, writes, users, [user for user, outcome, _ in plans if outcome == WRITE])
            self._finish(run, graph, action, writes, plans)
        except PackError as exc:
            error = exc
        return run.close(error)

    def _resolve(self, run: ResponseRun, graph: EntraClient, accounts: tuple[AccountEntity, ...]) -> list[EntraUser]:
        """The Entra users the accounts name, read side by side; refusals audited in the accounts' order."""
        users: dict[str, EntraUser] = {}
        for user in run.each(accounts, lambda account: self._resolve_one(run, graph, account)):
            if user is not None:
                users.setdefault(user.id.lower(), user)
        return list(users.values())

    @staticmethod
    def _resolve_one(run: ResponseRun, graph: EntraClient, account: AccountEntity) -> EntraUser | None:
        label = account.upn or account.aad_user_id or account.name or "?"
        rule = run.guard.account_rule(account.upn, account.aad_user_id, account.name)
        if rule:
            run.refuse(label, f"protected account (PROTECTED_ACCOUNTS entry {rule!r})")
            return None
        ident, why = _identifier(account)
        if ident is None:
            run.refuse(label, why)
            return None
        user = graph.get_user(ident)
        if user is None:
            run.refuse(label, f"no Entra ID user {ident!r}")
            return None
        rule = run.guard.account_rule(user.user_principal_name, user.id)
        if rule:
            run.refuse(user.label, f"protected account (PROTECTED_ACCOUNTS entry {rule!r})")
            return None
        return user

    # -- the actions --------------------------------------------------------------------------
    # Each runs in three steps: ``_plan`` decides per user from its state (read inside the lease) what to report or
    # to write; ``_spend`` spends the budget and notes the writes about to be sent, side by side (two Table requests
    # in one round trip); ``_finish`` writes and reports. The ledger's ``done`` marks are deferred to the end of the
    # call (``ResponseRun.defer``: stored beside the comment, before the leases are given back).
    def _plan(self, run: ResponseRun, graph: EntraClient, action: UserAction, writes: WriteLedger,
              users: list[EntraUser]) -> list[Plan]:
        if action is CONFIRM:
            try:
                states = run.each(users, lambda user: graph.risk_state(user.id))
            except LicenceRequired as exc:
                return [(user, "unavailable", exc.message) for user in users]
            return run.each(list(zip(users, states, strict=True)), lambda item: _plan_confirm(run, writes, *item))
        if action is REVOKE:
            return run.each(users, lambda user: _plan_revoke(run, writes, user))
        return run.each(users, lambda user: _plan_enabled(run, writes, user, action is ENABLE))

    @staticmethod
    def _spend(run: ResponseRun, writes: WriteLedger, users: list[EntraUser], to_write: list[EntraUser]) -> None:
        """The budget spent on the users, and the writes to come noted in the ledger, side by side. Past the cap
        nothing is written to Graph, and the notes are marked cancelled (a retry must not take them for writes
        whose answer was lost)."""
        outcomes = run_bounded(lambda step: step(), [lambda: run.count([u.id for u in users], "users"),
                                                     lambda: writes.requested(*to_write)], 2)
        if not outcomes[0].ok and outcomes[1].ok and to_write:
            try:
                writes.cancelled(*to_write)
            except PackError as exc:
                log.warning("could not mark the ledger's notes cancelled: %s", exc.message)
        for outcome in outcomes:
            outcome.get()

    def _finish(self, run: ResponseRun, graph: EntraClient, action: UserAction, writes: WriteLedger,
                plans: list[Plan]) -> None:
        done: list[EntraUser] = []  # written by this call: their ledger marks, deferred
        run.defer(lambda: writes.done(*done))
        if action is CONFIRM:
            self._confirm(run, graph, plans, done)
            return

        def finish(plan: Plan) -> None:
            user, outcome, detail = plan
            if outcome == WRITE:
                detail = self._revoke(run, graph, user) if action is REVOKE else \
                    self._set_enabled(run, graph, user, action is ENABLE)
                if detail is None:  # refused by Graph: recorded as failed
                    return
                outcome = "done"
            if outcome == "done":
                done.append(user)  # list.append is atomic: the users' threads share the list
            run.add(user.label, outcome, detail, [user.id])

        run.each(plans, finish)

    @staticmethod
    def _confirm(run: ResponseRun, graph: EntraClient, plans: list[Plan], done: list[EntraUser]) -> None:
        to_confirm = [user for user, outcome, _ in plans if outcome == WRITE]
        for user, outcome, detail in plans:
            if outcome == "done":
                done.append(user)
            if outcome != WRITE:
                run.add(user.label, outcome, detail, [user.id])
        if not to_confirm:
            return
        try:
            graph.confirm_compromised([u.id for u in to_confirm])
        except LicenceRequired as exc:  # the licence can lapse between the read and the write
            for user in to_confirm:
                run.add(user.label, "unavailable", exc.message, [user.id])
            return
        except GraphDenied as exc:
            for user in to_confirm:
                run.failed(user.label, exc, userId=user.id)
            return
        done.extend(to_confirm)
        for user in to_confirm:
            run.add(user.label, "done", "confirmed compromised: user risk set to high", [user.id])

    @staticmethod
    def _revoke(run: ResponseRun, graph: EntraClient, user: EntraUser) -> str | None:
        try:
            graph.revoke_sessions(user.id)
        except GraphDenied as exc:
            run.failed(user.label, exc, userId=user.id)
            return None
        return "sign-in sessions revoked: the user must sign in again"

    @staticmethod
    def _set_enabled(run: ResponseRun, graph: EntraClient, user: EntraUser, enabled: bool) -> str | None:
        """Disable (``enabled`` False) or enable one account."""
        try:
            graph.set_enabled(user.id, enabled)
        except GraphDenied as exc:  # e.g. a privileged admin: out of the identity's reach by design
            run.failed(user.label, exc, userId=user.id)
            return None
        return f"account {'enabled' if enabled else 'disabled'} (accountEnabled {str(enabled).lower()})"


WRITE = "write"  # a plan's outcome: the user needs the write
Plan = tuple  # (EntraUser, outcome, detail): what ``_finish`` reports for the user, or WRITE


def _plan_confirm(run: ResponseRun, writes: WriteLedger, user: EntraUser, state: str | None) -> Plan:
    if state == "confirmedCompromised":
        lost = writes.outcome(user) == "lost"
        if lost and run.observing:
            return user, "would", "another run is confirming this user"
        if lost:
            return user, "done", f"confirmed compromised: user risk set to high ({LOST})"
        return user, "already", "already confirmed compromised in Identity Protection"
    if run.read_only:
        return user, "would", f"confirm compromised (risk state {state or 'none'})"
    return user, WRITE, ""


def _plan_revoke(run: ResponseRun, writes: WriteLedger, user: EntraUser) -> Plan:
    """Graph keeps no trace of a revocation a retry could check: the ledger does."""
    outcome = writes.outcome(user, took_effect=_revoked_since)
    if outcome == "done":
        case = "incident" if run.case.incident_id else "alert"
        return user, "already", f"sign-in sessions already revoked for this {case}"
    if outcome == "lost" and not run.observing:
        return user, "done", f"sign-in sessions revoked: the user must sign in again ({LOST})"
    if run.read_only:
        return user, "would", "revoke all refresh tokens and session cookies"
    return user, WRITE, ""


def _plan_enabled(run: ResponseRun, writes: WriteLedger, user: EntraUser, enabled: bool) -> Plan:
    """Disable (``enabled`` False) or enable one account; its state was read inside the lease."""
    verb, state = ("enable", "enabled") if enabled else ("disable", "disabled")
    if user.account_enabled is enabled and not run.observing and writes.outcome(user) == "lost":
        return user, "done", f"account {state} (accountEnabled {str(enabled).lower()}; {LOST})"
    if user.account_enabled is enabled:
        return user, "already", f"account already {state}"
    if run.read_only:
        return user, "would", f"{verb} the account (accountEnabled {str(enabled).lower()})"
    return user, WRITE, ""


LOST = "by this case's earlier call, whose answer from Graph was lost"


def _revoked_since(user: EntraUser, moment: float) -> bool:
    """Graph moved the user's signInSessionsValidFromDateTime to ``moment`` or later: a revocation then took effect."""
    if not user.sessions_valid_from:
        return False
    try:
        valid_from = datetime.fromisoformat(user.sessions_valid_from.replace("Z", "+00:00"))
    except ValueError:
        return False
    if valid_from.tzinfo is None:
        valid_from = valid_from.replace(tzinfo=UTC)
    return valid_from.timestamp() >= moment - CLOCK_SKEW_SECONDS


class WriteLedger:
    """The case's Graph writes of one kind (table ``responseledger``, RowKey ``<verb>|<user id>``).

    A row is ``requested`` before the write and ``done`` after it. A row still ``requested`` means an earlier
    call of this case sent the write and never learnt the outcome (Graph timed out, the function stopped):
    the retry reads the user's state and, when the write took effect, reports it as done by this case, not
    as "already in place", and does not write again. A case-less entity run keeps no rows.
    """

    def __init__(self, ctx: Context, case: Case, verb: str) -> None:
        self.store = ctx.state
        key = case.incident_id or case.alert_id
        self.partition = key_safe(key) if key else None
        self.verb = verb

    def _row(self, user: EntraUser) -> dict | None:
        if self.partition is None:
            return None
        return self.store.get(LEDGER_TABLE, self.partition, f"{self.verb}|{user.id.lower()}")

    def _mark(self, state: str, users: tuple[EntraUser, ...]) -> None:
        """One request for the users' rows (they share the case's partition)."""
        if self.partition is None or not users:
            return
        rows = [{"PartitionKey": self.partition, "RowKey": f"{self.verb}|{user.id.lower()}", "action": self.verb,
                 "state": state, "at": time.time()} for user in users]
        if len(rows) == 1:
            self.store.upsert(LEDGER_TABLE, rows[0])
        else:
            self.store.transaction(LEDGER_TABLE, [op_merge(row) for row in rows])

    def requested(self, *users: EntraUser) -> None:
        self._mark("requested", users)

    def cancelled(self, *users: EntraUser) -> None:
        """The noted writes were not sent (the call was refused before them): no retry may take them for lost ones."""
        self._mark("cancelled", users)

    def done(self, *users: EntraUser) -> None:
        self._mark("done", users)

    def outcome(self, user: EntraUser, took_effect: Callable[[EntraUser, float], bool] | None = None) -> str | None:
        """From one read of the user's row: ``done`` (this case wrote it and saw the answer), ``lost`` (this case
        requested the write, never saw its answer, and ``took_effect`` says it happened), else None."""
        row = self._row(user)
        if row is None:
            return None
        state = row.get("state", "done")  # rows written before the state column: done
        if state == "done":
            return "done"
        if state == "requested" and (took_effect is None or took_effect(user, float(row.get("at") or 0))):
            return "lost"
        return None


__all__ = ["CONFIRM", "DISABLE", "ENABLE", "LEDGER_TABLE", "REVOKE", "UserResponse"]
