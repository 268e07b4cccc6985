"""The Logic Apps HTTP-webhook wait: subscribe, unsubscribe, call back once, time out; shared by the approvals
(orchestration) and the user's own confirmation (response), which may not import each other.

Contract (Logic Apps "HTTP Webhook" action): the action subscribes with ``@{listCallbackUrl()}`` and waits
until something POSTs to that URL (its body becomes the action's output) or its ``limit.timeout`` passes; it
sends ``unsubscribe`` when the run is cancelled. The callback URL carries the Logic App's SAS signature: it
is stored, never logged or answered.

Records live in one Table Storage partition per kind, RowKey = an HMAC of the callback URL, so a retried
subscribe finds the record it created instead of asking twice. A record is ``pending`` until someone
decides (``decided``), its deadline passes (``timedout``, set only by the sweep: a GET never changes
anything) or the run is cancelled (``cancelled``). Every change is an etag-guarded replace. The outcome is
commented on the incident once and called back once; a callback that keeps failing is redelivered by the
sweep up to ``CALLBACK_MAX_ATTEMPTS`` times within ``CALLBACK_MAX_AGE_HOURS``, then marked ``failed`` with
an audit comment (no endless redelivery to a host that never answers).

Callback URLs are checked with the parser that connects (urllib3's ``parse_url``, which requests uses) and
with the standard library's; both must agree on the host, and backslashes, control, space, percent-encoded
and non-ASCII characters and userinfo are refused outright, so ``https://evil.example\\.logic.azure.com``
cannot pass the allow-list check while the connection goes to ``evil.example``.
"""

from __future__ import annotations

import fnmatch
import html
import json
import logging
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from typing import Any, ClassVar, Generic, TypeVar
from urllib.parse import urlsplit

from urllib3.exceptions import LocationParseError
from urllib3.util import parse_url

from core.case import Case, ci_get, normalise
from core.errors import BadRequest, DownstreamError, NotFound, PackError
from core.http import call
from core.links import base_url
from core.sentinel import comment_id
from core.signing import Signer
from core.telemetry import bind_incident

log = logging.getLogger(__name__)

DURATION_RE = re.compile(r"^P(?:(?P<d>\d+)D)?(?:T(?:(?P<h>\d+)H)?(?:(?P<m>\d+)M)?(?:(?P<s>\d+)S)?)?$", re.I)
MAX_TIMEOUT_SECONDS = 30 * 86400
MAX_URL_LENGTH = 4096
_HOST_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$")
_LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}


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


# -- the callback URL (SSRF guard) ------------------------------------------------------------------
def check_callback_url(url: Any, allowed_hosts: frozenset[str], local_mode: bool) -> str:
    """The callback URL if it points at an allowed Logic Apps host; else BadRequest naming the problem (the URL
    itself is never echoed: it carries the Logic App's signature)."""
    if not isinstance(url, str) or not url.strip():
        raise BadRequest("callbackUrl is required: pass @{listCallbackUrl()} from the HTTP webhook action")
    url = url.strip()
    if len(url) > MAX_URL_LENGTH:
        raise BadRequest(f"callbackUrl is longer than {MAX_URL_LENGTH} characters")
    if any(ch == "\\" or not 0x21 <= ord(ch) <= 0x7E for ch in url):
        raise BadRequest("callbackUrl contains a backslash, a space, a control or a non-ASCII character: "
                         "not a URL a Logic App issues", code="CallbackUrlMalformed")
    try:
        connects_to = parse_url(url)  # what requests/urllib3 will connect to
        split = urlsplit(url)
        split_host, split_port = (split.hostname or "").lower(), split.port
    except (LocationParseError, ValueError):
        raise BadRequest("callbackUrl is not a valid URL (its host or port cannot be parsed)",
                         code="CallbackUrlMalformed") from None
    host = (connects_to.host or "").lower()
    if connects_to.auth or split.username is not None or split.password is not None:
        raise BadRequest("callbackUrl must not carry a user name or password", code="CallbackUrlMalformed")
    if not host or host.strip("[]") != split_host or connects_to.port != split_port:
        raise BadRequest("callbackUrl is ambiguous: URL parsers disagree on its host", code="CallbackUrlMalformed")
    scheme = (connects_to.scheme or "").lower()
    if local_mode and host in _LOOPBACK and scheme in ("http", "https"):
        return url
    if not _HOST_RE.match(host):
        raise BadRequest("callbackUrl host must be a plain DNS name (no percent-encoding, brackets or trailing dot)",
                         code="CallbackUrlMalformed")
    if scheme != "https":
        raise BadRequest("callbackUrl must use https")
    if connects_to.port not in (None, 443):
        raise BadRequest("callbackUrl must use the default https port")
    if not any(fnmatch.fnmatchcase(host, pattern) for pattern in allowed_hosts):
        raise BadRequest(f"callbackUrl host {host[:80]!r} is not an allowed Logic Apps host "
                         "(setting APPROVAL_CALLBACK_ALLOWED_HOSTS)", code="CallbackHostNotAllowed")
    return url


def public_base_url(settings, origin: str) -> str:
    """Where links point: ``core.links.base_url`` (``PUBLIC_BASE_URL``; the caller's origin only in LOCAL_MODE)."""
    return base_url(settings, origin)


# -- the record ---------------------------------------------------------------------------------------
@dataclass
class Wait:
    """What every HTTP-webhook wait keeps. Subclasses add fields; list and dict fields are stored as JSON."""

    id: str
    incident_id: str | None
    case_label: str
    title: str
    callback_url: str = field(repr=False)
    base_url: str
    created_at: float
    expires_at: int
    state: str = "pending"  # pending | decided | timedout | cancelled
    decision: str = ""
    decided_by: str = ""  # the signed-in person's UPN (or the link's approver when sign-in is off)
    decided_by_id: str = ""  # their Entra object id
    decided_by_name: str = ""
    decided_at: float = 0.0
    callback_state: str = "none"  # none | pending | delivered | gone | failed
    callback_attempts: int = 0
    callback_noted: bool = True  # False: a failed callback still needs its audit comment
    commented: bool = False
    etag: str | None = field(default=None, repr=False)

    JSON_FIELDS: ClassVar[tuple[str, ...]] = ()
    PARTITION: ClassVar[str] = "wait"

    def entity(self) -> dict[str, Any]:
        row = {k: v for k, v in asdict(self).items() if k not in ("etag", "id")}
        for name in self.JSON_FIELDS:
            row[name] = json.dumps(row[name])
        row.update(PartitionKey=self.PARTITION, RowKey=self.id, incident_id=self.incident_id or "")
        return row

    @classmethod
    def from_entity(cls, row: dict[str, Any]) -> Any:
        names = {f.name for f in fields(cls)} - {"etag", "id"}
        values = {k: (json.loads(row[k]) if k in cls.JSON_FIELDS else row[k]) for k in names if k in row}
        return cls(id=row["RowKey"], etag=row.get("_etag"), **values)

    def closed_how(self) -> str:
        if self.state == "decided":
            return f"{self.decision} (by {self.decided_by_name or self.decided_by} at {iso(self.decided_at)})"
        if self.state == "timedout":
            return f"TimedOut (nobody answered before {iso(self.expires_at)})"
        if self.state == "cancelled":
            return f"cancelled by the playbook at {iso(self.decided_at)}"
        return f"pending until {iso(self.expires_at)}"


W = TypeVar("W", bound=Wait)


class WebhookWaits(ABC, Generic[W]):
    """Store, unsubscribe, close (comment + callback, capped), and the sweep, for one kind of wait."""

    TABLE: ClassVar[str]
    RECORD: ClassVar[type]
    NOUN: ClassVar[str] = "wait"  # how comments and logs name it

    def __init__(self, ctx, clock: Callable[[], float] = time.time) -> None:
        settings = ctx.settings
        settings.require("APPROVAL_SIGNING_KEY")
        self.ctx = ctx
        self.settings = settings
        self.signer = Signer(str(settings["APPROVAL_SIGNING_KEY"]))
        self.clock = clock

    # -- store ----------------------------------------------------------------------------------
    def get(self, wait_id: str) -> W | None:
        if not re.fullmatch(r"[0-9a-f]{32}", wait_id or ""):
            return None
        row = self.ctx.state.get(self.TABLE, self.RECORD.PARTITION, wait_id)
        return self.RECORD.from_entity(row) if row else None

    def save(self, wait: W) -> bool:
        """Etag-guarded write: False when someone else changed the record first."""
        ok = self.ctx.state.replace_if_unchanged(self.TABLE, wait.entity(), wait.etag or "*")
        if ok:
            fresh = self.get(wait.id)
            wait.etag = fresh.etag if fresh else None
        return ok

    def create(self, wait: W) -> tuple[W, bool]:
        """Insert once (a retried subscribe finds the first record); (the stored record, created)."""
        created = self.ctx.state.insert_if_absent(self.TABLE, wait.entity())
        stored = self.get(wait.id)
        if stored is None:
            raise DownstreamError(f"the {self.NOUN} could not be read back from the state store", retry_after=5)
        return stored, created

    def incident_case(self, body: Any) -> Case:
        """The subscribe body's ``incident`` (the trigger body or ``{"incidentArmId": ...}``), which must name one."""
        incident = ci_get(body, "incident")
        if incident is None:
            raise BadRequest("incident is required: pass @triggerBody() (or {\"incidentArmId\": ...})")
        case = normalise(incident, max_entities=int(self.settings["MAX_ENTITIES"]))
        bind_incident(case.incident_id)
        if not case.incident_id:
            raise BadRequest(f"a {self.NOUN} needs an incident: the incident body names none")
        return case

    def callback_of(self, body: Any) -> str:
        return check_callback_url(ci_get(body, "callbackUrl"),
                                  self.settings["APPROVAL_CALLBACK_ALLOWED_HOSTS"] or frozenset(),  # type: ignore[arg-type]
                                  bool(self.settings["LOCAL_MODE"]))

    def id_of(self, callback_url: str) -> str:
        return self.signer.derive_id(callback_url)

    def deadline(self, body: Any, default_minutes_setting: str) -> int:
        timeout = ci_get(body, "timeout")
        seconds = parse_duration(timeout) if timeout is not None else 60 * int(self.settings[default_minutes_setting])
        return int(self.clock() + seconds)

    # -- unsubscribe ------------------------------------------------------------------------------
    def unsubscribe(self, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise BadRequest("the unsubscribe request must be a JSON object")
        callback = ci_get(body, "callbackUrl")
        wait_id = ci_get(body, "approvalId", "questionId", "id")
        if isinstance(callback, str) and callback:
            wait_id = self.id_of(callback.strip())
        if not isinstance(wait_id, str):
            raise BadRequest("unsubscribe needs callbackUrl (@{listCallbackUrl()})")
        for _ in range(5):
            wait = self.get(wait_id)
            if wait is None:
                raise NotFound(f"no such {self.NOUN}")
            if wait.state != "pending":
                return self.summary(wait)
            wait.state, wait.decided_at = "cancelled", self.clock()
            wait.commented = True  # the cancellation comment below is the last one
            if self.save(wait):
                self.comment(wait, "cancelled",
                             f"<p>{html.escape(self.NOUN.capitalize())} <b>cancelled</b> by the playbook at "
                             f"{iso(wait.decided_at)} (its run was cancelled or timed out); its links no longer "
                             "decide anything.</p>")
                return self.summary(wait)
        raise DownstreamError(f"the {self.NOUN} kept changing; retry", retry_after=5)

    # -- closing: comment + callback ------------------------------------------------------------
    def finish(self, wait: W) -> None:
        """Audit comment and callback of a closed wait; both idempotent, retried by the sweep, the callback capped."""
        try:
            if not wait.commented:
                self.comment(wait, "outcome", self.outcome_text(wait))
                wait.commented = True
            if wait.callback_state == "pending":
                self._call_back(wait)
            if not wait.callback_noted:
                self.comment(wait, "callback-failed",
                             f"<p><b>Playbook not resumed</b>: the callback of {self.NOUN} {html.escape(wait.id)} "
                             f"({html.escape(wait.closed_how())}) failed {wait.callback_attempts} time(s) and is no "
                             "longer retried. Check the playbook's run; act on the outcome by hand if it still "
                             "matters.</p>")
                wait.callback_noted = True
        except PackError as error:
            log.warning("%s %s: follow-up failed (%s); the sweep retries", self.NOUN, wait.id, error.code)
        if not self.save(wait):
            log.info("%s %s changed during its follow-up; the sweep re-checks it", self.NOUN, wait.id)

    def _call_back(self, wait: W) -> None:
        max_attempts = int(self.settings["CALLBACK_MAX_ATTEMPTS"])
        max_age = 3600 * int(self.settings["CALLBACK_MAX_AGE_HOURS"])
        closed_at = wait.decided_at or wait.created_at
        if wait.callback_attempts >= max_attempts or self.clock() - closed_at > max_age:
            self._give_up(wait, f"{wait.callback_attempts} attempts, closed at {iso(closed_at)}")
            return
        try:
            url = self.callback_of({"callbackUrl": wait.callback_url})
        except BadRequest as refused:  # e.g. the allowed hosts changed since: never retried
            self._give_up(wait, refused.message)
            return
        wait.callback_attempts += 1
        response = call(self.ctx.session, "POST", url, service="LogicApps", json=self.callback_body(wait),
                        allow_redirects=False)
        if 200 <= response.status_code < 300:
            wait.callback_state = "delivered"
        elif response.status_code in (404, 410):
            log.warning("%s %s: the Logic App run no longer waits (HTTP %s)", self.NOUN, wait.id,
                        response.status_code)
            wait.callback_state = "gone"
        else:
            raise DownstreamError(f"the Logic App callback answered HTTP {response.status_code}")

    def _give_up(self, wait: W, why: str) -> None:
        log.error("%s %s: callback marked failed (%s)", self.NOUN, wait.id, why)
        wait.callback_state, wait.callback_noted = "failed", False

    def time_out(self, wait: W) -> bool:
        """Only the sweep calls this: a page view (GET) never changes a wait."""
        wait.state, wait.decision = "timedout", "TimedOut"
        wait.decided_at, wait.callback_state = self.clock(), "pending"
        if not self.save(wait):
            return False
        log.info("%s %s timed out", self.NOUN, wait.id)
        self.on_timeout(wait)
        self.finish(wait)
        return True

    def sweep(self) -> dict[str, int]:
        """Time out pending waits past their deadline; redeliver comments and callbacks that failed."""
        timed_out = retried = 0
        now = self.clock()
        rows = self.ctx.state.query(self.TABLE, "PartitionKey eq @p and (state eq 'pending' or callback_state eq "
                                                "'pending' or commented eq false or callback_noted eq false)",
                                    {"p": self.RECORD.PARTITION})
        for row in list(rows):
            wait = self.get(row["RowKey"])
            if wait is None:
                continue
            if wait.state == "pending":
                if now >= wait.expires_at and self.time_out(wait):
                    timed_out += 1
            elif wait.callback_state == "pending" or not wait.commented or not wait.callback_noted:
                self.finish(wait)
                retried += 1
        return {"timedOut": timed_out, "retried": retried}

    # -- comments -------------------------------------------------------------------------------
    def comment(self, wait: W, kind: str, text: str) -> None:
        """One comment per wait and ``kind`` (requested, outcome, cancelled, ...): each step of a wait is a new
        comment, never an edit of an earlier one (issue 15.11), written through the incident's comment budget. A
        comment the budget leaves out is not retried: the outcome is in the logs and the callback."""
        if wait.incident_id:
            self.ctx.comments.write(wait.incident_id, comment_id(wait.incident_id, self.NOUN, wait.id, kind), text)

    # -- what each kind says --------------------------------------------------------------------
    @abstractmethod
    def summary(self, wait: W) -> dict[str, Any]:
        """The JSON answer of subscribe and unsubscribe."""

    @abstractmethod
    def outcome_text(self, wait: W) -> str:
        """The audit comment (HTML) of the outcome."""

    @abstractmethod
    def callback_body(self, wait: W) -> dict[str, Any]:
        """What the waiting Logic App action receives as its body."""

    def on_timeout(self, wait: W) -> None:
        """A hook for what a time-out does besides the comment and the callback (nothing by default)."""


__all__ = ["Wait", "WebhookWaits", "check_callback_url", "iso", "parse_duration", "public_base_url"]
