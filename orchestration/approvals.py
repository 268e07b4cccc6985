"""Approvals: the Logic Apps HTTP-webhook wait, answered by a signed-in approver.

Flow. The playbook's HttpWebhook action subscribes (``POST orchestration/approvals``) with its
``listCallbackUrl()``, the incident, the choices and a timeout (core/webhook.py keeps the wait). The pack
stores the approval with the exact targets Block would touch (orchestration/targets.py), then asks:
- each approver by **mail** (Graph sendMail from ``APPROVAL_MAILBOX``), with personal links, one per choice;
- **Teams / Slack** with a notice only: what is asked, the targets, the deadline and one "Review" link.
  Nothing posted to a channel can decide: the review page lets a signed-in approver decide, nobody else.
The first valid decision is commented on the incident (naming the signed-in person) and POSTed to the
callback with the target list; nobody deciding in time gives ``TimedOut`` (the sweep, never a page view).

Who decides. With ``APPROVAL_REQUIRE_SIGN_IN`` (default) the page and its POST need an Entra ID sign-in
(the app's own, or App Service Authentication: ``SIGN_IN_MODE``, core/principal.py). A decision counts
only when the signed-in person is an approver now (orchestration/approvers.py: object id, UPN or group
membership), and through a personal link only when they are the person the link was mailed to. Turning
sign-in off (local tries only; loud outside LOCAL_MODE) falls back to "the link's holder decides as the
approver it names".

Analyst tasks (issue 18.3). A decision of ``Block`` on an approval whose targets name users adds the
``approval.block`` incident tasks (core/tasks.py: "Reset the user's credentials", "Tell the user's manager";
``INCIDENT_TASKS`` changes or turns them off) before the outcome comment, which lists them. Their ids are
deterministic, so a redelivery by the sweep adds nothing twice, and a task an analyst completed is never
reopened. A task that cannot be written does not hold up the playbook: the comment says so and names the tasks
to add by hand, and the callback goes out as usual.

Links: ``{PUBLIC_BASE_URL}/api/orchestration/approvals/{id}/{choice|review}?[approver=]&expires=&sig=`` with
``sig = HMAC(APPROVAL_SIGNING_KEY, "v1\\n{id}\\n{choice|review}\\n{approver|''}\\n{expires}")``: signed (any
change breaks it: 403), expiring (410), single use (the first decision wins through an etag-guarded
replace; later clicks see 409). No key ever goes into a link, and links are never built from a request's
Host header outside LOCAL_MODE (``PUBLIC_BASE_URL`` is required there).
"""

from __future__ import annotations

import html
import logging
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from core.case import Case, ci_get
from core.directory import Person
from core.errors import BadRequest, DownstreamError, PackError
from core.pages import Refused, deadline_text
from core.principal import Principal, sign_in_ready
from core.radius import BlastRadius
from core.tasks import Tasks, templates_from_setting
from core.telemetry import bind_incident
from core.webhook import Wait, WebhookWaits, iso, public_base_url
from orchestration.approvers import Approvers, matches
from orchestration.targets import Targets, compute

log = logging.getLogger(__name__)

TABLE = "approvals"
ROUTE = "orchestration/approvals"
REVIEW = "review"
RESERVED = {"timedout", "cancelled", REVIEW}
CHOICE_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,30}$")
BLOCK = "block"  # the choice that acts (case-insensitive): its decision adds the analyst tasks
TASK_OUTCOME = "approval.block"


class LinkRefused(Refused):
    """A link or a click the pack refuses; the page shows its message and, when it helps, who may decide."""

    def __init__(self, status: int, message: str, code: str, *, who_may_decide: list[str] | None = None) -> None:
        super().__init__(status, message, code, sections=[("Who may decide", who_may_decide)] if who_may_decide else [])


@dataclass
class Approval(Wait):
    question: str = ""
    choices: list[str] = field(default_factory=list)
    approvers: list[Any] = field(default_factory=list)  # Person dicts (plain addresses in rows of old versions)
    entries: list[str] = field(default_factory=list)  # the APPROVERS entries asked: re-checked at each decision
    targets: dict[str, Any] = field(default_factory=dict)
    via: str = ""  # how the decision came: personal link | review page
    tasks: list[dict[str, str]] = field(default_factory=list)  # analyst tasks a Block added (or why not)

    JSON_FIELDS = ("choices", "approvers", "entries", "targets", "tasks")
    PARTITION = "approval"

    def people(self) -> list[Person]:
        return [Person.from_dict(p) if isinstance(p, dict) else Person(upn=str(p), mail=str(p))
                for p in self.approvers]

    def person(self, key: str) -> Person | None:
        return next((p for p in self.people() if p.key == key.lower()), None)

    def choice(self, raw: str) -> str | None:
        return next((c for c in self.choices if c.lower() == raw.lower()), None)

    def target_list(self) -> Targets:
        return Targets.from_dict(self.targets)

    def link(self, signer, choice: str, approver: str = "") -> str:
        """A personal link (``choice`` for ``approver``) or, with ``choice == "review"``, the review page."""
        sig = signer.sign("v1", self.id, choice.lower(), approver.lower(), self.expires_at)
        who = f"approver={quote(approver.lower(), safe='@')}&" if approver else ""
        return f"{self.base_url}/api/{ROUTE}/{self.id}/{quote(choice)}?{who}expires={self.expires_at}&sig={sig}"


@dataclass(frozen=True)
class LinkCheck:
    approval: Approval
    choice: str | None  # None: the review page (every choice)
    person: Person | None  # the approver a personal link was mailed to


class Approvals(WebhookWaits[Approval]):
    """Subscribe, the links and their decisions; unsubscribe, closing and the sweep come from WebhookWaits."""

    TABLE = TABLE
    RECORD = Approval
    NOUN = "approval"

    def __init__(self, ctx, **kw) -> None:
        super().__init__(ctx, **kw)
        self.approvers = Approvers(ctx)
        self.require_sign_in = bool(self.settings["APPROVAL_REQUIRE_SIGN_IN"])

    def sign_in_ready(self) -> None:
        """Approvals that need a person refuse to run where nobody can sign in (core/principal.py says why)."""
        if self.require_sign_in:
            sign_in_ready()

    # -- subscribe ------------------------------------------------------------------------------
    def subscribe(self, body: Any, origin: str) -> tuple[int, dict[str, Any]]:
        if not isinstance(body, dict):
            raise BadRequest("the approval request must be a JSON object")
        callback = self.callback_of(body)
        self.sign_in_ready()
        case = self.incident_case(body)
        choices = self._choices(ci_get(body, "choices"))
        entries = self.approvers.chosen(ci_get(body, "approvers"))
        channels = self._channels(ci_get(body, "channels"))
        base = public_base_url(self.settings, origin)
        expires = self.deadline(body, "APPROVAL_TIMEOUT_MINUTES")
        approval_id = self.id_of(callback)
        stored = self.get(approval_id)
        created = False
        if stored is None:
            case = self.ctx.with_entities(case)
            people = self.approvers.people(entries)
            radius = BlastRadius(self.ctx.state, self.settings)
            targets = compute(case, self.ctx.state, self.settings["BLOCK_IP_VERDICTS"] or frozenset(),  # type: ignore[arg-type]
                              isolate=_flag(ci_get(body, "isolateHosts")),
                              remaining=lambda action: radius.remaining(str(case.incident_id), action))
            approval = Approval(
                id=approval_id, incident_id=case.incident_id, case_label=case.label,
                title=(case.title or case.label)[:300], callback_url=callback, base_url=base,
                created_at=self.clock(), expires_at=expires,
                question=str(ci_get(body, "question") or f"Respond to {case.label}?")[:500], choices=choices,
                approvers=[p.to_dict() for p in people], entries=entries, targets=targets.to_dict())
            stored, created = self.create(approval)
            if created:
                self.comment(stored, "requested", self._requested_text(stored))
        asked = self._ask(stored, case, channels) if stored.state == "pending" else {}
        log.info("approval %s for %s: created=%s state=%s", stored.id, case.label, created, stored.state)
        return (201 if created else 200), {**self.summary(stored), "asked": asked}

    def _choices(self, raw: Any) -> list[str]:
        if raw is None:
            return ["Block", "Ignore"]
        if not isinstance(raw, list) or not 2 <= len(raw) <= 5:
            raise BadRequest("choices must be a list of 2 to 5 names, e.g. [\"Block\", \"Ignore\"]")
        out: list[str] = []
        for item in raw:
            if not isinstance(item, str) or not CHOICE_RE.match(item) or item.lower() in RESERVED:
                raise BadRequest(f"choice {str(item)[:40]!r} must be a short name (letters, digits, - or _) "
                                 "other than TimedOut, Cancelled and Review")
            if item.lower() in (c.lower() for c in out):
                raise BadRequest(f"choice {item!r} is listed twice")
            out.append(item)
        return out

    @staticmethod
    def _channels(raw: Any) -> tuple[str, ...]:
        known = ("email", "teams", "slack")
        if raw is None:
            return known
        if not isinstance(raw, list) or not raw or any(str(c).lower() not in known for c in raw):
            raise BadRequest("channels must be a non-empty list of: email, teams, slack")
        return tuple(str(c).lower() for c in raw)

    # -- asking ---------------------------------------------------------------------------------
    def _ask(self, approval: Approval, case: Case, channels: tuple[str, ...]) -> dict[str, str]:
        from orchestration.approval_messages import ask

        return ask(self, approval, case, channels)

    # -- the link -------------------------------------------------------------------------------
    def check_link(self, approval_id: str, raw_choice: str, query: dict[str, str]) -> LinkCheck:
        """The approval, choice and addressee of a genuine link (nothing about who clicks); LinkRefused if not."""
        approver = (query.get("approver") or "").strip().lower()
        signature = query.get("sig") or ""
        try:
            expires = int(query.get("expires") or "")
        except ValueError:
            expires = -1
        review = raw_choice.lower() == REVIEW
        if expires < 0 or len(raw_choice) > 40 or (review == bool(approver)) \
                or not self.signer.valid(signature, "v1", approval_id, raw_choice.lower(), approver, expires):
            raise LinkRefused(403, "This approval link is not valid (it was altered or is incomplete). Use the "
                                   "link from your approval message.", "LinkInvalid")
        approval = self.get(approval_id)
        if approval is None:
            raise LinkRefused(404, "This approval no longer exists.", "ApprovalNotFound")
        bind_incident(approval.incident_id)
        choice = None if review else approval.choice(raw_choice)
        person = approval.person(approver) if approver else None
        if expires != approval.expires_at or (not review and (choice is None or person is None)):
            raise LinkRefused(403, "This approval link does not belong to this approval.", "LinkInvalid")
        return LinkCheck(approval, choice, person)

    def who_may_decide(self, approval: Approval) -> list[str]:
        return [p.label for p in approval.people()]

    def authorize(self, check: LinkCheck, principal: Principal | None) -> None:
        """May this person decide through this link? LinkRefused 403 saying who may, if not."""
        approval = check.approval
        if not self.require_sign_in:
            if check.person is None:
                raise LinkRefused(403, "Sign-in is off (APPROVAL_REQUIRE_SIGN_IN=false): only the personal links "
                                       "mailed to approvers can decide.", "SignInRequired")
            if not self.approvers.allows_names(check.person.names(), check.person.id, approval.entries):
                raise LinkRefused(403, f"{check.person.label} is no longer an approver (APPROVERS).", "NotAnApprover",
                                  who_may_decide=self.who_may_decide(approval))
            return
        assert principal is not None, "the page asks for a sign-in first"
        if not self.approvers.allows(principal, approval.entries):
            raise LinkRefused(403, f"You are signed in as {principal.upn or principal.object_id}, who is not an "
                                   "approver of this approval: nothing was decided.", "NotAnApprover",
                              who_may_decide=self.who_may_decide(approval))
        if check.person is not None and not matches(check.person, principal):
            raise LinkRefused(403, f"This link was mailed to {check.person.label}; you are signed in as "
                                   f"{principal.upn or principal.object_id}. Use your own link or the review page.",
                              "NotYourLink", who_may_decide=self.who_may_decide(approval))

    def check_open(self, approval: Approval) -> None:
        """Still decidable? 409 when closed, 410 when past its deadline. Changes nothing: the sweep times out."""
        if approval.state != "pending":
            raise LinkRefused(409, f"Already closed: {approval.closed_how()}. Your click changed nothing.",
                              "AlreadyDecided")
        if self.clock() >= approval.expires_at:
            raise LinkRefused(410, f"This approval expired at {iso(approval.expires_at)}: nobody decided in time, so "
                                   "the playbook continues with TimedOut.", "LinkExpired")

    def decide(self, check: LinkCheck, choice: str, principal: Principal | None) -> Approval:
        """Record the first valid decision (etag-guarded), comment on the incident, call the playbook back."""
        for _ in range(5):
            approval = self.get(check.approval.id)
            if approval is None:
                raise LinkRefused(404, "This approval no longer exists.", "ApprovalNotFound")
            self.check_open(approval)
            approval.state, approval.decision, approval.decided_at = "decided", choice, self.clock()
            if principal is not None:
                approval.decided_by = principal.upn or principal.email or principal.object_id
                approval.decided_by_id, approval.decided_by_name = principal.object_id, principal.name
            else:
                assert check.person is not None
                approval.decided_by, approval.decided_by_id = check.person.key, check.person.id
                approval.decided_by_name = check.person.name
            approval.via = "personal link" if check.person is not None else "review page"
            approval.callback_state = "pending"
            if self.save(approval):
                log.info("approval %s decided: %s by %s (%s)", approval.id, choice, approval.decided_by_id or
                         approval.decided_by, approval.via)
                self.finish(approval)
                return approval
            # Someone decided (or cancelled) between our read and write: the loop shows their outcome.
        raise DownstreamError("the approval kept changing; retry", retry_after=5)

    # -- after the decision: analyst tasks, then the comment and the callback ----------------------
    def finish(self, approval: Approval) -> None:
        """A Block adds its analyst tasks before the outcome comment (which lists them); then as every wait."""
        if not approval.commented and self._blocks(approval):
            approval.tasks = self._add_tasks(approval)
        super().finish(approval)

    @staticmethod
    def _blocks(approval: Approval) -> bool:
        return approval.state == "decided" and approval.decision.lower() == BLOCK and \
            bool(approval.target_list().users) and bool(approval.incident_id)

    def _add_tasks(self, approval: Approval) -> list[dict[str, str]]:
        """The ``approval.block`` tasks (idempotent: deterministic ids, completed ones stay completed); when they
        cannot be written, their titles with the reason, for the comment."""
        users = ", ".join(u.get("upn") or u.get("label") or "?" for u in approval.target_list().users)
        values = {"user": users, "users": users, "count": len(approval.target_list().users),
                  "approver": approval.decided_by_name or approval.decided_by}
        tasks: Tasks | None = None
        try:
            tasks = Tasks(self.ctx.sentinel, templates_from_setting(str(self.settings["INCIDENT_TASKS"] or "")))
            added = tasks.add(str(approval.incident_id), TASK_OUTCOME, **values)
        except PackError as error:
            log.warning("approval %s: analyst tasks not added (%s: %s)", approval.id, error.code, error.message)
            titles = tasks.titles(TASK_OUTCOME, **values) if tasks is not None else []
            return [{"title": title, "result": "failed", "detail": error.message[:300]} for title in titles] or \
                [{"title": "", "result": "failed", "detail": error.message[:300]}]
        return [task.to_dict() for task in added]

    # -- what it says ---------------------------------------------------------------------------
    def summary(self, approval: Approval) -> dict[str, Any]:
        return {"approvalId": approval.id, "incident": approval.incident_id, "state": approval.state,
                "decision": approval.decision or None, "decidedBy": approval.decided_by or None,
                "decidedById": approval.decided_by_id or None,
                "decidedAt": iso(approval.decided_at) if approval.decided_at else None,
                "expiresAt": iso(approval.expires_at), "choices": approval.choices,
                "approvers": [p.key for p in approval.people()], "targets": approval.targets,
                "callback": approval.callback_state, "tasks": approval.tasks}

    def callback_body(self, approval: Approval) -> dict[str, Any]:
        return {"approvalId": approval.id, "decision": approval.decision,
                "decidedBy": approval.decided_by or None, "decidedById": approval.decided_by_id or None,
                "decidedByName": approval.decided_by_name or None,
                "decidedAt": iso(approval.decided_at or self.clock()), "incidentArmId": approval.incident_id,
                "targets": approval.targets}

    def _requested_text(self, approval: Approval) -> str:
        e = html.escape
        people = ", ".join(p.label for p in approval.people())
        return (f"<p><b>Approval requested</b> ({e(approval.id)}): {e(approval.question)}</p>"
                f"<p>Choices: {e(', '.join(approval.choices))}. Approvers (sign-in required): {e(people)}. Open until "
                f"{e(deadline_text(approval.expires_at, str(self.settings['DISPLAY_TIME_ZONE'])))}.</p>"
                f"<p>Block would act on: {e(approval.target_list().summary_line())}.</p>")

    def outcome_text(self, approval: Approval) -> str:
        e = html.escape
        if approval.state == "decided":
            who = (f"{approval.decided_by_name} ({approval.decided_by}, object id {approval.decided_by_id})"
                   if approval.decided_by_id else approval.decided_by)
            how = ("signed in with Microsoft Entra ID" if self.require_sign_in
                   else "holding the approver's link (sign-in is OFF)")
            return (f"<p><b>Approval decision: {e(approval.decision)}</b></p><p>Decided by {e(who)}, {how}, at "
                    f"{iso(approval.decided_at)} through the {e(approval.via)} (approval {e(approval.id)}); the "
                    f"playbook continues with {e(approval.decision)}.</p>"
                    f"<p>Targets: {e(approval.target_list().summary_line())}.</p>" + _tasks_text(approval.tasks))
        people = ", ".join(p.label for p in approval.people())
        return (f"<p><b>Approval timed out</b></p><p>Nobody of {e(people)} decided before "
                f"{iso(approval.expires_at)} (approval {e(approval.id)}); the playbook continues with TimedOut.</p>")


def _tasks_text(tasks: list[dict[str, str]]) -> str:
    """The outcome comment's line about the analyst tasks a Block added (or could not add)."""
    e = html.escape
    added = [t["title"] + (" (completed by an analyst earlier)" if t.get("result") == "kept-completed" else "")
             for t in tasks if t.get("result") != "failed" and t.get("title")]
    failed = [t for t in tasks if t.get("result") == "failed"]
    text = f"<p>Analyst tasks: {e('; '.join(added))}.</p>" if added else ""
    if failed:
        titles = "; ".join(t["title"] for t in failed if t.get("title"))
        text += (f"<p>Analyst tasks could not be added ({e(failed[0].get('detail', ''))})"
                 + (f": add them by hand: {e(titles)}" if titles else "") + ".</p>")
    return text


def _flag(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.strip().lower() == "true")


__all__ = ["REVIEW", "ROUTE", "Approval", "Approvals", "LinkCheck", "LinkRefused"]
