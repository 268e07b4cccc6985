"""Approvals: the Logic Apps HTTP-webhook wait, answered by approvers clicking signed links.

Flow. The playbook's HttpWebhook action subscribes (``POST orchestration/approvals``) with its
``listCallbackUrl()``, the incident, the choices and a timeout. The pack stores the approval, asks
every approver (mail from ``APPROVAL_MAILBOX`` and/or the Teams / Slack webhooks) with one link per
approver and choice, and POSTs ``{"decision", "decidedBy", "decidedAt", ...}`` to the callback URL
when the first valid decision arrives -- or ``TimedOut`` when nobody decided in time (timer
``approval_sweep``). Unsubscribe (``DELETE orchestration/approvals``, the run was cancelled) closes it.

Links: ``{base}/api/orchestration/approvals/{id}/{choice}?approver=&expires=&sig=`` where
``sig = base64url(HMAC-SHA256(APPROVAL_SIGNING_KEY, "v1\\n{id}\\n{choice}\\n{approver}\\n{expires}"))``:
- signed: any change to id, choice, approver or expiry breaks the signature (compared in constant time);
- bound to the approver: the decision is recorded as that approver's, who must be in the approval's
  approvers and still in ``APPROVERS`` when clicking;
- expiring: ``expires`` is the approval's deadline;
- single use: the first valid decision wins through an etag-guarded replace; afterwards every link of
  the approval (the same one replayed, or another approver's) only shows who decided what and when.
A GET (mail scanners, chat link previews) only shows a confirmation page; the POST from its form
decides. The link is anonymous (approvers hold no function key): the signature is the credential.

Table ``approvals``: PartitionKey ``approval``, RowKey = approval id, one row per approval with its
state (pending | decided | timedout | cancelled), decision, who and when, the callback's delivery
state (none | pending | delivered | gone) and the callback URL. The id is an HMAC of the callback
URL, so the Logic App retrying a subscribe finds the same approval instead of asking twice. The
sweep scans the one partition for pending approvals past their deadline and undelivered callbacks;
approvals are few (one per response decision), so no secondary index is kept.
The callback URL carries the Logic App's SAS signature: it is stored, never logged or answered.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import hmac
import html
import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlsplit

from core.case import Case, ci_get, normalise
from core.errors import BadRequest, ConfigurationError, DownstreamError, NotFound, PackError
from core.http import call
from core.sentinel import comment_id
from core.telemetry import bind_incident

log = logging.getLogger(__name__)

TABLE = "approvals"
PARTITION = "approval"
RESERVED = {"timedout", "cancelled"}
CHOICE_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,30}$")
DURATION_RE = re.compile(r"^P(?:(?P<d>\d+)D)?(?:T(?:(?P<h>\d+)H)?(?:(?P<m>\d+)M)?(?:(?P<s>\d+)S)?)?$", re.I)
MAX_TIMEOUT_SECONDS = 30 * 86400
MIN_KEY_LENGTH = 32
ROUTE = "orchestration/approvals"


class LinkRefused(PackError):
    """A click the pack refuses; its message is shown to the approver on the page."""

    def __init__(self, status: int, message: str, code: str) -> None:
        super().__init__(message, code=code)
        self.status = status


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_duration(value: Any) -> int:
    """ISO 8601 duration (``PT1H``, ``P1D``, ``PT90S``) in seconds, within 1 s .. 30 days."""
    match = DURATION_RE.match(str(value).strip()) if isinstance(value, str) else None
    if not match or not any(match.groupdict().values()):
        raise BadRequest(f"timeout {str(value)[:40]!r} is not an ISO 8601 duration such as PT1H")
    seconds = (int(match["d"] or 0) * 86400 + int(match["h"] or 0) * 3600 + int(match["m"] or 0) * 60
               + int(match["s"] or 0))
    if not 1 <= seconds <= MAX_TIMEOUT_SECONDS:
        raise BadRequest("timeout must be between PT1S and P30D")
    return seconds


# -- signing -------------------------------------------------------------------------------------
class Signer:
    """HMAC-SHA256 over the link's fields; the key is never shown."""

    def __init__(self, key: str) -> None:
        if len(key) < MIN_KEY_LENGTH:
            raise ConfigurationError(f"setting APPROVAL_SIGNING_KEY must be at least {MIN_KEY_LENGTH} characters")
        self._key = key.encode()

    def __repr__(self) -> str:
        return "Signer(***)"

    def _mac(self, text: str) -> bytes:
        return hmac.new(self._key, text.encode(), hashlib.sha256).digest()

    def approval_id(self, callback_url: str) -> str:
        return self._mac("id\n" + callback_url).hex()[:32]

    def sign(self, approval_id: str, choice: str, approver: str, expires: int) -> str:
        mac = self._mac(f"v1\n{approval_id}\n{choice.lower()}\n{approver.lower()}\n{expires}")
        return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()

    def valid(self, approval_id: str, choice: str, approver: str, expires: int, signature: str) -> bool:
        return hmac.compare_digest(self.sign(approval_id, choice, approver, expires).encode(),
                                   signature.encode("utf-8", "replace"))


# -- callback URL (SSRF guard) -------------------------------------------------------------------
def check_callback_url(url: Any, allowed_hosts: frozenset[str], local_mode: bool) -> str:
    """The callback URL if it points at an allowed Logic Apps host; else BadRequest (never echoing the URL)."""
    from core.settings import _is_loopback

    if not isinstance(url, str) or not url.strip():
        raise BadRequest("callbackUrl is required: pass @{listCallbackUrl()} from the HTTP webhook action")
    parts = urlsplit(url.strip())
    host = (parts.hostname or "").lower()
    if parts.username or parts.password or not host:
        raise BadRequest("callbackUrl is not a plain https URL")
    if local_mode and _is_loopback(host) and parts.scheme in ("http", "https"):
        return url.strip()
    if parts.scheme != "https":
        raise BadRequest("callbackUrl must use https")
    if parts.port not in (None, 443):
        raise BadRequest("callbackUrl must use the default https port")
    if not any(fnmatch.fnmatchcase(host, pattern) for pattern in allowed_hosts):
        raise BadRequest(f"callbackUrl host {host[:80]!r} is not an allowed Logic Apps host "
                         "(setting APPROVAL_CALLBACK_ALLOWED_HOSTS)", code="CallbackHostNotAllowed")
    return url.strip()


# -- the approval --------------------------------------------------------------------------------
@dataclass
class Approval:
    id: str
    incident_id: str | None
    case_label: str
    title: str
    choices: list[str]
    approvers: list[str]
    callback_url: str = field(repr=False)
    base_url: str
    created_at: float
    expires_at: int
    question: str = ""
    state: str = "pending"  # pending | decided | timedout | cancelled
    decision: str = ""
    decided_by: str = ""
    decided_at: float = 0.0
    callback_state: str = "none"  # none | pending | delivered | gone
    callback_attempts: int = 0
    commented: bool = False
    etag: str | None = field(default=None, repr=False)

    def entity(self) -> dict[str, Any]:
        row = {k: v for k, v in asdict(self).items() if k not in ("etag", "choices", "approvers")}
        row.update(PartitionKey=PARTITION, RowKey=self.id, choices=json.dumps(self.choices),
                   approvers=json.dumps(self.approvers), incident_id=self.incident_id or "")
        return row

    @classmethod
    def from_entity(cls, row: dict[str, Any]) -> Approval:
        names = {f for f in cls.__dataclass_fields__ if f not in ("etag", "choices", "approvers", "id")}
        values = {k: row[k] for k in names if k in row}
        return cls(id=row["RowKey"], choices=json.loads(row["choices"]), approvers=json.loads(row["approvers"]),
                   etag=row.get("_etag"), **values)

    def choice(self, raw: str) -> str | None:
        return next((c for c in self.choices if c.lower() == raw.lower()), None)

    def link(self, signer: Signer, choice: str, approver: str) -> str:
        sig = signer.sign(self.id, choice, approver, self.expires_at)
        return (f"{self.base_url}/api/{ROUTE}/{self.id}/{quote(choice)}?approver={quote(approver, safe='@')}"
                f"&expires={self.expires_at}&sig={sig}")

    def outcome(self) -> str:
        if self.state == "decided":
            return f"{self.decision} (decided by {self.decided_by} at {iso(self.decided_at)})"
        if self.state == "timedout":
            return f"TimedOut (nobody decided before {iso(self.expires_at)})"
        if self.state == "cancelled":
            return f"cancelled by the playbook at {iso(self.decided_at)}"
        return f"pending until {iso(self.expires_at)}"

    def summary(self) -> dict[str, Any]:
        return {"approvalId": self.id, "incident": self.incident_id, "state": self.state,
                "decision": self.decision or None, "decidedBy": self.decided_by or None,
                "decidedAt": iso(self.decided_at) if self.decided_at else None, "expiresAt": iso(self.expires_at),
                "choices": self.choices, "approvers": self.approvers, "callback": self.callback_state}


# -- the service ---------------------------------------------------------------------------------
class Approvals:
    """Subscribe, unsubscribe, the link clicks and the sweep, over one Context."""

    def __init__(self, ctx, clock: Callable[[], float] = time.time) -> None:
        settings = ctx.settings
        settings.require("APPROVAL_SIGNING_KEY")
        self.ctx = ctx
        self.settings = settings
        self.signer = Signer(str(settings["APPROVAL_SIGNING_KEY"]))
        self.clock = clock

    # -- store ----------------------------------------------------------------------------------
    def get(self, approval_id: str) -> Approval | None:
        if not re.fullmatch(r"[0-9a-f]{32}", approval_id):
            return None
        row = self.ctx.state.get(TABLE, PARTITION, approval_id)
        return Approval.from_entity(row) if row else None

    def _save(self, approval: Approval) -> bool:
        """Etag-guarded write: False when someone else changed the approval first."""
        ok = self.ctx.state.replace_if_unchanged(TABLE, approval.entity(), approval.etag or "*")
        if ok:
            fresh = self.get(approval.id)
            approval.etag = fresh.etag if fresh else None
        return ok

    def _configured_approvers(self) -> frozenset[str]:
        approvers = self.settings["APPROVERS"] or frozenset()
        if not approvers:
            raise ConfigurationError("setting APPROVERS is empty: nobody may decide approvals")
        return approvers  # type: ignore[return-value]

    # -- subscribe / unsubscribe ----------------------------------------------------------------
    def subscribe(self, body: Any, origin: str) -> tuple[int, dict[str, Any]]:
        if not isinstance(body, dict):
            raise BadRequest("the approval request must be a JSON object")
        callback = check_callback_url(ci_get(body, "callbackUrl"),
                                      self.settings["APPROVAL_CALLBACK_ALLOWED_HOSTS"] or frozenset(),  # type: ignore[arg-type]
                                      bool(self.settings["LOCAL_MODE"]))
        incident = ci_get(body, "incident")
        if incident is None:
            raise BadRequest("incident is required: pass @triggerBody() (or {\"incidentArmId\": ...})")
        case = normalise(incident, max_entities=int(self.settings["MAX_ENTITIES"]))
        bind_incident(case.incident_id)
        if not case.incident_id:
            raise BadRequest("an approval needs an incident: the incident body names none")
        choices = self._choices(ci_get(body, "choices"))
        approvers = self._approvers(ci_get(body, "approvers"))
        timeout = ci_get(body, "timeout")
        seconds = (parse_duration(timeout) if timeout is not None
                   else 60 * int(self.settings["APPROVAL_TIMEOUT_MINUTES"]))
        question = str(ci_get(body, "question") or f"Respond to {case.label}?")[:500]
        channels = self._channels(ci_get(body, "channels"))
        base = str(self.settings["PUBLIC_BASE_URL"] or origin).rstrip("/")
        now = self.clock()
        approval = Approval(
            id=self.signer.approval_id(callback), incident_id=case.incident_id, case_label=case.label,
            title=(case.title or case.label)[:300], choices=choices, approvers=sorted(approvers),
            callback_url=callback, base_url=base, created_at=now, expires_at=int(now + seconds), question=question)
        created = self.ctx.state.insert_if_absent(TABLE, approval.entity())
        stored = self.get(approval.id)
        if stored is None:
            raise DownstreamError("the approval could not be read back from the state store", retry_after=5)
        if created:
            self._comment(stored, "requested", self._requested_text(stored))
        asked = self._ask(stored, case, channels) if stored.state == "pending" else {}
        log.info("approval %s for %s: created=%s state=%s", stored.id, case.label, created, stored.state)
        return (201 if created else 200), {**stored.summary(), "asked": asked}

    def unsubscribe(self, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise BadRequest("the unsubscribe request must be a JSON object")
        callback = ci_get(body, "callbackUrl")
        approval_id = ci_get(body, "approvalId")
        if isinstance(callback, str) and callback:
            approval_id = self.signer.approval_id(callback.strip())
        if not isinstance(approval_id, str):
            raise BadRequest("unsubscribe needs callbackUrl (@{listCallbackUrl()}) or approvalId")
        for _ in range(5):
            approval = self.get(approval_id)
            if approval is None:
                raise NotFound("no such approval")
            if approval.state != "pending":
                return approval.summary()
            approval.state, approval.decided_at = "cancelled", self.clock()
            approval.commented = True  # the cancellation comment below is the last one
            if self._save(approval):
                self._comment(approval, "cancelled",
                              f"Approval <b>cancelled</b> by the playbook at {iso(approval.decided_at)} "
                              "(its run was cancelled or timed out); the links no longer decide anything.")
                return approval.summary()
        raise DownstreamError("the approval kept changing; retry", retry_after=5)

    def _choices(self, raw: Any) -> list[str]:
        if raw is None:
            return ["Block", "Ignore"]
        if not isinstance(raw, list) or not 2 <= len(raw) <= 5:
            raise BadRequest("choices must be a list of 2 to 5 names, e.g. [\"Block\", \"Ignore\"]")
        out: list[str] = []
        for item in raw:
            if not isinstance(item, str) or not CHOICE_RE.match(item) or item.lower() in RESERVED:
                raise BadRequest(f"choice {str(item)[:40]!r} must be a short name (letters, digits, - or _) "
                                 "other than TimedOut and Cancelled")
            if item.lower() in (c.lower() for c in out):
                raise BadRequest(f"choice {item!r} is listed twice")
            out.append(item)
        return out

    def _approvers(self, raw: Any) -> set[str]:
        configured = self._configured_approvers()
        if raw is None:
            return set(configured)
        if isinstance(raw, str):
            raw = [part for part in re.split(r"[;,]", raw) if part.strip()]
        if not isinstance(raw, list) or not raw:
            raise BadRequest("approvers must be a non-empty list of addresses from the APPROVERS setting")
        chosen = {str(item).strip().lower() for item in raw}
        unknown = sorted(chosen - configured)
        if unknown:
            raise BadRequest(f"approvers not in the APPROVERS setting: {', '.join(unknown)[:200]}")
        return chosen

    def _channels(self, raw: Any) -> tuple[str, ...]:
        known = ("email", "teams", "slack")
        if raw is None:
            return known
        if not isinstance(raw, list) or not raw or any(str(c).lower() not in known for c in raw):
            raise BadRequest("channels must be a non-empty list of: email, teams, slack")
        return tuple(str(c).lower() for c in raw)

    # -- asking the approvers -------------------------------------------------------------------
    def _ask(self, approval: Approval, case: Case, channels: tuple[str, ...]) -> dict[str, str]:
        from orchestration.ledger import SendLedger
        from orchestration.notify import Button, Notice, Notifier, event_key, incomplete

        event = event_key("approval", approval.id)
        results: dict[str, str] = {}
        errors: list[PackError] = []
        mailbox = self.settings["APPROVAL_MAILBOX"]
        if "email" in channels and mailbox:
            from orchestration.mail import GraphMailer

            mailer = GraphMailer(self.ctx.session, self.ctx.tokens, str(self.settings["GRAPH_ENDPOINT"]), str(mailbox))
            ledger = SendLedger(self.ctx.state)
            for approver in approval.approvers:
                channel = f"mail:{approver}"
                try:
                    results[channel] = ledger.send_once(event, channel, lambda a=approver: mailer.send(
                        a, f"Approval needed: {approval.title}"[:255], self._mail_html(approval, case, a)))
                except PackError as error:
                    log.warning("approval mail failed: %s %s", error.code, error.message)
                    results[channel] = f"failed: {error.message}"
                    errors.append(error)
        elif "email" in channels:
            results["email"] = "not-configured"
        chat = tuple(c for c in ("teams", "slack") if c in channels)
        if chat:
            rows = [(f"{approver}:", [Button(c, approval.link(self.signer, c, approver),
                                             "danger" if i == 0 else "default")
                                      for i, c in enumerate(approval.choices)]) for approver in approval.approvers]
            text = (f"{approval.question} Each approver uses their own buttons; the first decision wins. "
                    f"Open until {iso(approval.expires_at)}.")
            notice = Notice.for_case(case, "Approval needed", text=text, button_rows=rows)
            chat_results, chat_errors = Notifier(self.ctx).send(notice, event, only=chat)
            results.update(chat_results)
            errors += chat_errors
        reached = any(r in ("sent", "already-sent", "in-progress", "unconfirmed") for r in results.values())
        retryable = [e for e in errors if not isinstance(e, ConfigurationError)]
        if errors and (retryable or not reached):
            raise incomplete(results, errors)
        if not reached:
            raise ConfigurationError("nobody can be asked: set APPROVAL_MAILBOX, TEAMS_WEBHOOK_URL or "
                                     "SLACK_WEBHOOK_URL (and request that channel)")
        return results

    def _mail_html(self, approval: Approval, case: Case, approver: str) -> str:
        from orchestration.notify import entity_labels

        e = html.escape
        buttons = " ".join(
            f'<a href="{e(approval.link(self.signer, c, approver))}" style="display:inline-block;padding:8px 16px;'
            f'margin-right:8px;border:1px solid #444;text-decoration:none">{e(c)}</a>' for c in approval.choices)
        facts = "".join(f"<tr><td><b>{e(k)}</b></td><td>{e(v)}</td></tr>" for k, v in (
            ("Incident", case.label), ("Title", approval.title), ("Severity", case.severity or "unknown"),
            ("Entities", ", ".join(entity_labels(case)) or "-")))
        link = (f'<p><a href="{e(case.url)}">Open the incident in Microsoft Sentinel</a></p>'
                if case.url and case.url.startswith("https://") else "")
        return (f"<p>{e(approval.question)}</p><table>{facts}</table>{link}<p>{buttons}</p>"
                f"<p>These links are yours ({e(approver)}): the decision is recorded in your name. Each opens a "
                f"confirmation page; the first decision by any approver wins. They expire at "
                f"{iso(approval.expires_at)}.</p>")

    # -- the link -------------------------------------------------------------------------------
    def check_link(self, approval_id: str, raw_choice: str, query: dict[str, str]) -> tuple[Approval, str, str]:
        """(approval, choice, approver) of a valid link; LinkRefused saying why not."""
        approver = (query.get("approver") or "").strip().lower()
        signature = query.get("sig") or ""
        try:
            expires = int(query.get("expires") or "")
        except ValueError:
            expires = -1
        if not approver or expires < 0 or not signature or len(signature) > 100 or len(raw_choice) > 40 \
                or not self.signer.valid(approval_id, raw_choice, approver, expires, signature):
            raise LinkRefused(403, "This approval link is not valid (it was altered or is incomplete). Use the "
                                   "link from your approval message.", "LinkInvalid")
        if approver not in self._configured_approvers():
            raise LinkRefused(403, f"{approver} is not an approver (APPROVERS): this link cannot decide.",
                              "NotAnApprover")
        approval = self.get(approval_id)
        if approval is None:
            raise LinkRefused(404, "This approval no longer exists.", "ApprovalNotFound")
        bind_incident(approval.incident_id)
        choice = approval.choice(raw_choice)
        if choice is None or approver not in approval.approvers or expires != approval.expires_at:
            raise LinkRefused(403, "This approval link does not belong to this approval.", "LinkInvalid")
        if approval.state != "pending":
            raise LinkRefused(409, f"Already closed: {approval.outcome()}. Your click changed nothing.",
                              "AlreadyDecided")
        if self.clock() >= expires:
            self._time_out(approval)
            raise LinkRefused(410, f"This link expired at {iso(expires)}; nobody decided in time, so the "
                                   "playbook continued with TimedOut.", "LinkExpired")
        return approval, choice, approver

    def decide(self, approval_id: str, raw_choice: str, query: dict[str, str]) -> tuple[Approval, str]:
        """Record the first valid decision, comment on the incident and call the playbook back."""
        for _ in range(5):
            approval, choice, approver = self.check_link(approval_id, raw_choice, query)
            approval.state, approval.decision = "decided", choice
            approval.decided_by, approval.decided_at = approver, self.clock()
            approval.callback_state = "pending"
            if self._save(approval):
                log.info("approval %s decided: %s by %s", approval.id, choice, approver)
                self.finish(approval)
                return approval, choice
            # Someone decided (or cancelled) between our read and write: the loop shows their outcome.
        raise DownstreamError("the approval kept changing; retry", retry_after=5)

    # -- closing: comment + callback ------------------------------------------------------------
    def finish(self, approval: Approval) -> None:
        """Audit comment and callback of a closed approval; both idempotent, retried by the sweep."""
        try:
            if not approval.commented:
                self._comment(approval, "outcome", self._outcome_text(approval))
                approval.commented = True
            if approval.callback_state == "pending":
                approval.callback_attempts += 1
                approval.callback_state = self._call_back(approval)
        except PackError as error:
            log.warning("approval %s: follow-up failed (%s); the sweep retries", approval.id, error.code)
        if not self._save(approval):
            log.info("approval %s changed during its follow-up; the sweep re-checks it", approval.id)

    def _call_back(self, approval: Approval) -> str:
        url = check_callback_url(approval.callback_url,
                                 self.settings["APPROVAL_CALLBACK_ALLOWED_HOSTS"] or frozenset(),  # type: ignore[arg-type]
                                 bool(self.settings["LOCAL_MODE"]))
        body = {"approvalId": approval.id, "decision": approval.decision,
                "decidedBy": approval.decided_by or None,
                "decidedAt": iso(approval.decided_at or self.clock()), "incidentArmId": approval.incident_id}
        response = call(self.ctx.session, "POST", url, service="LogicApps", json=body, allow_redirects=False)
        if 200 <= response.status_code < 300:
            return "delivered"
        if response.status_code in (404, 410):
            log.warning("approval %s: the Logic App run no longer waits (HTTP %s)", approval.id, response.status_code)
            return "gone"
        raise DownstreamError(f"the Logic App callback answered HTTP {response.status_code}")

    def _time_out(self, approval: Approval) -> bool:
        approval.state, approval.decision = "timedout", "TimedOut"
        approval.decided_at, approval.callback_state = self.clock(), "pending"
        if not self._save(approval):
            return False
        log.info("approval %s timed out", approval.id)
        self.finish(approval)
        return True

    def sweep(self) -> dict[str, int]:
        """Time out pending approvals past their deadline; redeliver comments and callbacks that failed."""
        timed_out = retried = 0
        now = self.clock()
        rows = self.ctx.state.query(TABLE, "PartitionKey eq @p and (state eq 'pending' or callback_state eq 'pending' "
                                           "or commented eq false)", {"p": PARTITION})
        for row in list(rows):
            approval = self.get(row["RowKey"])
            if approval is None:
                continue
            if approval.state == "pending":
                if now >= approval.expires_at and self._time_out(approval):
                    timed_out += 1
            elif approval.callback_state == "pending" or not approval.commented:
                self.finish(approval)
                retried += 1
        return {"timedOut": timed_out, "retried": retried}

    # -- comments -------------------------------------------------------------------------------
    def _comment(self, approval: Approval, kind: str, text: str) -> None:
        if approval.incident_id:
            self.ctx.sentinel.put_comment(approval.incident_id, comment_id(approval.incident_id, "approval",
                                                                           approval.id, kind), text)

    def _requested_text(self, approval: Approval) -> str:
        e = html.escape
        return (f"<p><b>Approval requested</b> ({e(approval.id)}): {e(approval.question)}</p>"
                f"<p>Choices: {e(', '.join(approval.choices))}. Approvers: {e(', '.join(approval.approvers))}. "
                f"Open until {iso(approval.expires_at)}.</p>")

    def _outcome_text(self, approval: Approval) -> str:
        e = html.escape
        if approval.state == "decided":
            return (f"<p><b>Approval decision: {e(approval.decision)}</b></p><p>Decided by {e(approval.decided_by)} "
                    f"at {iso(approval.decided_at)} through their signed approval link (approval {e(approval.id)}); "
                    f"the playbook continues with {e(approval.decision)}.</p>")
        return (f"<p><b>Approval timed out</b></p><p>Nobody of {e(', '.join(approval.approvers))} decided before "
                f"{iso(approval.expires_at)} (approval {e(approval.id)}); the playbook continues with TimedOut.</p>")
