"""The user's own confirmation: "Was this you?" (Sentinel's playbook guidance: "send a Teams message to the
user, requesting confirmation that the user took the suspicious action"; by mail here, since Graph
application permissions cannot post Teams chat messages).

``POST response/entra/ask-user`` is a Logic Apps HTTP-webhook subscribe, like approvals (core/webhook.py
keeps the wait; ``DELETE`` unsubscribes): every account entity of the incident that resolves to an Entra user
and is not protected (``PROTECTED_ACCOUNTS``) gets a mail from ``APPROVAL_MAILBOX`` with a short summary of
the activity and a personal link. The page behind it needs an Entra ID sign-in, and the signed-in person
must be that user (object id). A compromised account can answer too, so:
- **"No, it wasn't me"** counts at once: the user is confirmed compromised in Identity Protection (and their
  sessions revoked when ``ASK_USER_REVOKE_ON_NO``), through the same code, guardrails and audit as
  ``response/entra/confirm-compromised``; the callback answers ``No`` and the playbook tells the SOC.
- **"Yes, it was me"** counts only with a fresh multi-factor sign-in (``amr`` holds ``mfa`` and the sign-in is
  at most ``ASK_USER_MFA_MAX_AGE_MINUTES`` old); it is commented, and the user's risk is dismissed
  (Graph ``riskyUsers/dismiss``) only when ``ASK_USER_DISMISS_RISK_ON_YES`` (off by default). It never closes
  the incident: the callback answers ``Yes`` when every asked user said yes, and the playbook decides.
- Nobody answering by the deadline: a comment and a ``TimedOut`` callback (the sweep, never a page view).
``DRY_RUN`` (or ``?dryRun=true`` on the subscribe) turns every action above into "would".
"""

from __future__ import annotations

import html
import logging
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import azure.functions as func

from core.case import Case, ci_get, normalise
from core.directory import Directory, Person
from core.errors import BadRequest, DownstreamError, PackError
from core.http import call, error_code_of
from core.pages import (
    CROSS_SITE,
    Button,
    Form,
    Page,
    Refused,
    deadline_html,
    deadline_text,
    form_token,
    here_of,
    origin_of,
    posted_form,
    serve_page,
    sign_in_gate,
)
from core.principal import Principal, login_url, sign_in_ready
from core.telemetry import bind_incident
from core.webhook import Wait, WebhookWaits, iso, public_base_url
from response.guardrails import Guardrails

log = logging.getLogger(__name__)

ROUTE = "response/entra/ask-user"
YES, NO = "Yes", "No"


@dataclass
class Question(Wait):
    summary: str = ""
    users: list[dict[str, Any]] = field(default_factory=list)  # Person dicts + answer, answered_at, mfa, outcome
    skipped: list[dict[str, str]] = field(default_factory=list)  # accounts not asked, with the reason
    dry_run: bool = False

    JSON_FIELDS = ("users", "skipped")
    PARTITION = "question"

    def user(self, object_id: str) -> dict[str, Any] | None:
        return next((u for u in self.users if u["id"] == object_id.lower()), None)

    def link(self, signer, object_id: str) -> str:
        sig = signer.sign("ask", self.id, object_id.lower(), self.expires_at)
        return (f"{self.base_url}/api/{ROUTE}/{self.id}?user={quote(object_id.lower())}&expires={self.expires_at}"
                f"&sig={sig}")


class AskUser(WebhookWaits[Question]):
    TABLE = "askuser"
    RECORD = Question
    NOUN = "question"

    # -- subscribe ------------------------------------------------------------------------------
    def subscribe(self, body: Any, origin: str, *, dry_run: bool = False) -> tuple[int, dict[str, Any]]:
        if not isinstance(body, dict):
            raise BadRequest("the ask-user request must be a JSON object")
        callback = self.callback_of(body)
        sign_in_ready()  # the user's answer needs their sign-in (core/principal.py)
        self.settings.require("APPROVAL_MAILBOX")
        case = self.incident_case(body)
        base = public_base_url(self.settings, origin)
        expires = self.deadline(body, "ASK_USER_TIMEOUT_MINUTES")
        question = self.get(self.id_of(callback))
        created = False
        if question is None:
            case = self.ctx.with_entities(case)
            guard = Guardrails.from_settings(self.settings, dry_run_requested=dry_run)
            users, skipped = self._askable(case, guard)
            if not users:
                from core.errors import Conflict

                raise Conflict("nobody can be asked: " + ("; ".join(f"{s['account']}: {s['reason']}" for s in skipped)
                                                         or "the incident has no account entity")[:600],
                               code="NobodyToAsk")
            question = Question(id=self.id_of(callback), incident_id=case.incident_id, case_label=case.label,
                                title=(case.title or case.label)[:300], callback_url=callback, base_url=base,
                                created_at=self.clock(), expires_at=expires, summary=_summary(case), users=users,
                                skipped=skipped, dry_run=guard.dry_run)
            question, created = self.create(question)
            if created:
                self.comment(question, "asked", self._asked_text(question))
        sent = self._mail(question) if question.state == "pending" else {}
        return (201 if created else 200), {**self.summary(question), "asked": sent}

    def _askable(self, case: Case, guard: Guardrails) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
        directory = Directory(self.ctx.session, self.ctx.tokens, str(self.settings["GRAPH_ENDPOINT"]))
        users: dict[str, dict[str, Any]] = {}
        skipped: list[dict[str, str]] = []
        for account in case.accounts:
            label = account.upn or account.name or account.aad_user_id or "?"
            rule = guard.account_rule(account.upn, account.aad_user_id, account.name)
            ident = account.aad_user_id or account.upn
            found: Person | None = directory.user(ident) if ident and not rule else None
            if found is not None:
                rule = guard.account_rule(found.upn, found.id)
            if rule:
                skipped.append({"account": label, "reason": f"protected account (PROTECTED_ACCOUNTS entry {rule!r})"})
            elif not ident:
                skipped.append({"account": label, "reason": "no Entra object id or UPN: cannot be identified safely"})
            elif found is None:
                skipped.append({"account": label, "reason": f"no Entra ID user {ident!r}"})
            elif not found.address:
                skipped.append({"account": label, "reason": "the user has no mailbox address"})
            else:
                users.setdefault(found.id, {**found.to_dict(), "answer": "", "answered_at": 0.0, "mfa": False,
                                            "outcome": ""})
        return list(users.values()), skipped

    def _mail(self, question: Question) -> dict[str, str]:
        from core.mail import GraphMailer
        from core.sendonce import SendLedger

        mailer = GraphMailer(self.ctx.session, self.ctx.tokens, str(self.settings["GRAPH_ENDPOINT"]),
                             str(self.settings["APPROVAL_MAILBOX"]))
        ledger, results, errors = SendLedger(self.ctx.state), {}, []
        for user in question.users:
            person = Person.from_dict(user)
            channel = f"mail:{person.address}"
            try:
                results[channel] = ledger.send_once(f"ask-{question.id}", channel, lambda p=person, u=user: mailer.send(
                    p.address, "Was this you? Please confirm a sign-in to your account", self._mail_html(question, u)))
            except PackError as error:
                results[channel] = f"failed: {error.message}"
                errors.append(error)
        if errors:
            raise DownstreamError("; ".join(f"{c}: {r}" for c, r in results.items())[:600],
                                  retry_after=max(e.retry_after or 30 for e in errors))
        return results

    def _mail_html(self, question: Question, user: dict[str, Any]) -> str:
        e = html.escape
        deadline = deadline_text(question.expires_at, str(self.settings["DISPLAY_TIME_ZONE"]))
        link = e(question.link(self.signer, user["id"]))
        return (f"<p>Hello {e(user.get('name') or user.get('upn') or '')},</p><p>Our security team saw this activity "
                f"on your account ({e(user.get('upn') or '')}):</p><p><i>{e(question.summary)}</i></p>"
                f'<p><a href="{link}" style="display:inline-block;padding:10px 18px;'
                'border:1px solid #444;border-radius:6px;text-decoration:none;font-weight:600">Was this you? Answer '
                "here</a></p><p>The page asks you to sign in with your work account. If it was not you, say so: we "
                f"will secure your account. Please answer by {e(deadline)}. Do not forward this mail.</p>")

    # -- the page -------------------------------------------------------------------------------
    def check_link(self, question_id: str, query: dict[str, str]) -> tuple[Question, dict[str, Any]]:
        object_id = (query.get("user") or "").strip().lower()
        try:
            expires = int(query.get("expires") or "")
        except ValueError:
            expires = -1
        if not object_id or expires < 0 or not self.signer.valid(query.get("sig") or "", "ask", question_id,
                                                                   object_id, expires):
            raise Refused(403, "This link is not valid (it was altered or is incomplete). Use the link from your "
                               "mail.", "LinkInvalid")
        question = self.get(question_id)
        if question is None:
            raise Refused(404, "This question no longer exists.", "QuestionNotFound")
        bind_incident(question.incident_id)
        user = question.user(object_id)
        if user is None or expires != question.expires_at:
            raise Refused(403, "This link does not belong to this question.", "LinkInvalid")
        return question, user

    def check_open(self, question: Question, user: dict[str, Any]) -> None:
        if question.state != "pending":
            raise Refused(409, f"Already closed: {question.closed_how()}. Nothing changed.", "AlreadyClosed")
        if user.get("answer"):
            raise Refused(409, f"You already answered {user['answer']!r}. Nothing changed.", "AlreadyAnswered")
        if self.clock() >= question.expires_at:
            raise Refused(410, f"This question expired at {iso(question.expires_at)}; the security team was told "
                               "that nobody answered.", "LinkExpired")

    def answer(self, question_id: str, object_id: str, answer: str, principal: Principal) -> Question:
        """Record one user's answer (etag-guarded), act on it, and close the question when it is decided."""
        mfa_window = 60 * int(self.settings["ASK_USER_MFA_MAX_AGE_MINUTES"])
        for _ in range(5):
            question = self.get(question_id)
            if question is None:
                raise Refused(404, "This question no longer exists.", "QuestionNotFound")
            user = question.user(object_id)
            assert user is not None
            self.check_open(question, user)
            fresh = principal.fresh_mfa(mfa_window, self.clock(), str(self.settings["SIGN_IN_MFA_AUTH_CONTEXT"] or ""))
            if answer == YES and not fresh:
                raise Refused(403, "\"Yes, it was me\" needs a recent multi-factor sign-in. Sign in again with your "
                                   "authenticator, and answer once more.", "FreshMfaRequired")
            user.update(answer=answer, answered_at=self.clock(), mfa=fresh)
            answers = [u["answer"] for u in question.users]
            if answer == NO or all(a == YES for a in answers):
                question.state, question.decision, question.decided_at = "decided", answer, self.clock()
                question.decided_by, question.decided_by_id = principal.upn, principal.object_id
                question.decided_by_name = principal.name
                question.callback_state = "pending"
            if self.save(question):
                user["outcome"] = self._act(question, user, answer)
                self.comment(question, f"answer-{object_id}", self._answer_text(question, user, principal))
                self.save(question)
                if question.state == "decided":
                    self.finish(question)
                return question
        raise DownstreamError("the question kept changing; retry", retry_after=5)

    def _act(self, question: Question, user: dict[str, Any], answer: str) -> str:
        """What the answer does to the account; failures are reported in the comment, not lost."""
        from response.users import UserResponse

        case = normalise({"incidentArmId": question.incident_id, "Entities": [
            {"Type": "account", "AadUserId": user["id"], "Name": user.get("upn") or user["id"]}]})
        try:
            if answer == NO:
                users = UserResponse(self.ctx)
                done = [users.confirm_compromised(case, dry_run=question.dry_run)]
                if self.settings["ASK_USER_REVOKE_ON_NO"]:
                    done.append(users.revoke_sessions(case, dry_run=question.dry_run))
                return "; ".join(_outcome(d) for d in done)
            if self.settings["ASK_USER_DISMISS_RISK_ON_YES"]:
                return self._dismiss_risk(user["id"], question.dry_run)
            return "risk left as it is (ASK_USER_DISMISS_RISK_ON_YES is off)"
        except PackError as error:
            log.warning("question %s: acting on %s failed: %s", question.id, answer, error.code)
            return f"FAILED: {error.message}"

    def _dismiss_risk(self, object_id: str, dry_run: bool) -> str:
        if dry_run:
            return "would dismiss the user's risk (dry run)"
        from core.credentials import GRAPH_SCOPE

        response = call(self.ctx.session, "POST",
                        f"{str(self.settings['GRAPH_ENDPOINT']).rstrip('/')}/v1.0/identityProtection/riskyUsers/dismiss",
                        service="Graph", json={"userIds": [object_id]},
                        headers={"Authorization": self.ctx.tokens.bearer(GRAPH_SCOPE)})
        if response.status_code == 204 or response.ok:
            return "risk dismissed in Identity Protection"
        return f"risk not dismissed: Graph answered {error_code_of(response) or response.status_code}"

    # -- what it says ---------------------------------------------------------------------------
    def summary(self, question: Question) -> dict[str, Any]:
        return {"questionId": question.id, "incident": question.incident_id, "state": question.state,
                "answer": question.decision or None, "expiresAt": iso(question.expires_at),
                "asked": [u["upn"] or u["id"] for u in question.users], "skipped": question.skipped,
                "dryRun": question.dry_run, "callback": question.callback_state}

    def callback_body(self, question: Question) -> dict[str, Any]:
        return {"questionId": question.id, "answer": question.decision, "incidentArmId": question.incident_id,
                "answeredBy": question.decided_by or None, "answeredById": question.decided_by_id or None,
                "answers": [{"user": u["upn"] or u["id"], "userId": u["id"], "answer": u["answer"] or None,
                             "multiFactor": u["mfa"], "outcome": u["outcome"] or None} for u in question.users]}

    def _asked_text(self, question: Question) -> str:
        e = html.escape
        asked = ", ".join(f"{u['name']} ({u['upn']})" for u in question.users)
        skipped = "".join(f"<li>{e(s['account'])}: {e(s['reason'])}</li>" for s in question.skipped)
        return (f"<p><b>Asked the user: \"Was this you?\"</b> ({e(question.id)})</p><p>Asked by mail: {e(asked)}; "
                f"answers count only when signed in as that user. Open until {iso(question.expires_at)}."
                f"{' DRY RUN: answers are recorded, nothing is changed.' if question.dry_run else ''}</p>"
                + (f"<p>Not asked:</p><ul>{skipped}</ul>" if skipped else ""))

    def _answer_text(self, question: Question, user: dict[str, Any], principal: Principal) -> str:
        e = html.escape
        said = "Yes, it was me" if user["answer"] == YES else "No, it wasn't me"
        return (f"<p><b>User answered: {e(said)}</b></p><p>{e(principal.label)} answered at "
                f"{iso(user['answered_at'])}, signed in with Microsoft Entra ID"
                f"{' with multi-factor authentication' if user['mfa'] else ''}. Outcome: {e(user['outcome'])}.</p>"
                "<p>The incident stays open: the playbook and the SOC decide what follows.</p>")

    def outcome_text(self, question: Question) -> str:
        e = html.escape
        if question.state == "decided":
            return (f"<p><b>User confirmation: {e(question.decision)}</b></p><p>Answered by "
                    f"{e(question.decided_by_name)} ({e(question.decided_by)}, object id {e(question.decided_by_id)}) "
                    f"at {iso(question.decided_at)} (question {e(question.id)}); the playbook continues with "
                    f"{e(question.decision)}.</p>")
        missing = ", ".join(u["upn"] or u["id"] for u in question.users if not u["answer"])
        return (f"<p><b>User confirmation timed out</b></p><p>{e(missing)} did not answer before "
                f"{iso(question.expires_at)} (question {e(question.id)}); the playbook continues with TimedOut.</p>")


def _summary(case: Case) -> str:
    props = case.raw_properties or {}
    text = [case.title or case.label]
    description = ci_get(props, "description")
    if isinstance(description, str) and description.strip():
        text.append(description.strip()[:400])
    first, last = ci_get(props, "firstActivityTimeUtc"), ci_get(props, "lastActivityTimeUtc")
    if first and last:
        text.append(f"Between {str(first)[:16].replace('T', ' ')} and {str(last)[:16].replace('T', ' ')} UTC.")
    if case.ips:
        text.append("From: " + ", ".join(ip.address for ip in case.ips[:5]) + ".")
    return " ".join(text)[:800]


def _outcome(result: dict[str, Any]) -> str:
    """``done: confirmed compromised: user risk set to high`` (or ``would: ...`` in a dry run)."""
    entries = [e for e in result.get("results") or [] if isinstance(e, dict)]
    return ", ".join(f"{e.get('outcome')}: {e.get('detail')}" for e in entries) or str(result.get("action"))


# -- the answer page (``GET|POST response/entra/ask-user/{id}``) ---------------------------------------------
def page(req: func.HttpRequest, ctx) -> func.HttpResponse:
    return serve_page(lambda: _page(req, ctx), "ask-user page")


def _page(req: func.HttpRequest, ctx) -> func.HttpResponse:
    service = AskUser(ctx)
    question, user = service.check_link(req.route_params.get("id", ""), dict(req.params.items()))
    sign_in_ready()
    gate = sign_in_gate(req)
    if not isinstance(gate, Principal):
        return gate
    principal = gate
    if principal.object_id != user["id"]:
        raise Refused(403, f"This question is for {user.get('name') or user.get('upn')}; you are signed in as "
                           f"{principal.upn or principal.object_id}. Nothing was recorded.", "NotForYou")
    service.check_open(question, user)
    if req.method.upper() == "GET":
        token = form_token(req, service.signer, question.id, principal.object_id)
        return Page(200, "Was this you?", question.summary, facts=[("Account", user.get("upn") or "")],
                    facts_html=[("Answer by", deadline_html(question.expires_at,
                                                             str(service.settings["DISPLAY_TIME_ZONE"])))],
                    form=Form(here_of(req), [Button("Yes, it was me", YES, "primary"),
                                             Button("No, it wasn't me", NO, "danger")], {"csrf": token},
                              field_name="answer"),
                    note="\"Yes\" needs a recent sign-in with your authenticator. If it wasn't you, we secure "
                         "your account right away.").response()
    form = posted_form(req, service.signer, question.id, principal.object_id,
                       public_base_url(service.settings, origin_of(req)))
    if form is None:
        return CROSS_SITE.response()
    answer = form.get("answer", "")
    if answer not in (YES, NO):
        return Page(400, "Not answered", "Press one of the two buttons.", tone="warn").response()
    try:
        service.answer(question.id, user["id"], answer, principal)
    except Refused as refused:
        if refused.code != "FreshMfaRequired":
            raise
        # The way out: a new sign-in with the authenticator, back to this page (the app's step-up, or Easy Auth's).
        raise Refused(refused.status, refused.message, refused.code,
                      link=("Sign in again with your authenticator", login_url(here_of(req), fresh_mfa=True))) from None
    text = ("Thank you. We are securing your account now; the security team will contact you." if answer == NO
            else "Thank you for confirming. The security team has your answer.")
    return Page(200, "Answer recorded", text, tone="ok").response()


__all__ = ["ROUTE", "AskUser", "Question", "page"]
