"""HTTP functions of the response area (one Blueprint). Every POST takes any Sentinel trigger body.

- ``POST response/mde/isolate`` (``?isolationType=Full|Selective``), ``POST response/mde/release``:
  202 + ``Location`` + ``Retry-After`` while Defender machine actions are pending, else 200;
- ``GET response/mde/actions/{id}?expires=&sig=``: 202 while pending, 200 with the final state. Anonymous:
  Logic Apps poll a 202 ``Location`` without the action's headers, so the URL's HMAC signature (bound to
  the operation and its expiry, core/links.py) is the credential; it carries no key and is built from
  ``PUBLIC_BASE_URL``, never from the request's Host;
- ``POST response/entra/confirm-compromised`` | ``revoke-sessions`` | ``disable-user`` | ``enable-user``;
- ``POST response/block-ip``, ``POST response/unblock-ip``;
- ``POST response/block-indicators``, ``POST response/unblock-indicators``: files, URLs and domains as Defender
  indicators (one route for the three kinds, as one enrichment route rates them: one call, one budget, one
  comment and one indicator import for a mixed incident);
- ``GET response/blocklist``: the plain-text external dynamic list firewalls poll.
Every POST accepts ``?dryRun=true`` (it can only add safety: the ``DRY_RUN`` setting cannot be lifted
per call). Services and SDKs are imported inside the functions, not at cold start.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import azure.functions as func

from core.api import error_response, json_response, run_action
from core.case import Case
from core.errors import PackError
from core.telemetry import traced

log = logging.getLogger(__name__)
bp = func.Blueprint()

ACTIONS_ROUTE = "response/mde/actions"
STATUS_LINK = "mde-status"  # the purpose the status URLs' signatures are bound to


def _ctx():
    from core.context import get_context

    return get_context()


def _dry_run(req: func.HttpRequest) -> bool:
    from response.run import parse_flag

    return parse_flag(req.params.get("dryRun"), "dryRun")


def _status_url(req: func.HttpRequest, reference: str, expires: int | None = None) -> str:
    """Where the Logic App polls: ``PUBLIC_BASE_URL`` + the operation + an expiring signature, and no key."""
    import time

    from core.links import LinkSigner, base_url

    settings = _ctx().settings
    if expires is None:
        expires = int(time.time()) + 3600 * int(settings["RESPONSE_STATUS_LINK_HOURS"])  # type: ignore[arg-type]
    signature = LinkSigner.from_settings(settings).sign(STATUS_LINK, reference, expires=expires)
    query = urlencode({"expires": expires, "sig": signature})
    return f"{base_url(settings, req.url)}/api/{ACTIONS_ROUTE}/{quote(reference, safe='')}?{query}"


def _asynchronous(req: func.HttpRequest, act: Callable[[Case], tuple[int, dict]], name: str) -> func.HttpResponse:
    """run_action, plus Location and Retry-After when the answer is a 202."""
    accepted: dict[str, str] = {}

    def action(case: Case) -> tuple[int, dict]:
        from core.links import LinkSigner, base_url
        from response.isolation import POLL_SECONDS

        # Checked before acting: a machine isolated by a call that then cannot say where to poll is lost to
        # the playbook (PUBLIC_BASE_URL and the signing key are configuration, answered 500 naming them).
        base_url(_ctx().settings, req.url)
        LinkSigner.from_settings(_ctx().settings)
        status, body = act(case)
        if status == 202:
            accepted["Location"] = _status_url(req, body["operation"])
            accepted["Retry-After"] = str(POLL_SECONDS)
        return status, body

    response = run_action(req, action, name=name)
    if response.status_code == 202:
        for header, value in accepted.items():
            response.headers[header] = value
    return response


# -- Defender for Endpoint -------------------------------------------------------------------------
@bp.route(route="response/mde/isolate", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
def mde_isolate(req: func.HttpRequest) -> func.HttpResponse:
    """Isolate the incident's machines (Full or Selective); 202 to poll while Defender works."""
    from response.isolation import MachineResponse

    return _asynchronous(req, lambda case: MachineResponse(_ctx()).isolate(
        case, isolation_type=req.params.get("isolationType"), dry_run=_dry_run(req)), "mde_isolate")


@bp.route(route="response/mde/release", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
def mde_release(req: func.HttpRequest) -> func.HttpResponse:
    """Release the incident's machines from isolation; 202 to poll while Defender works."""
    from response.isolation import MachineResponse

    return _asynchronous(req, lambda case: MachineResponse(_ctx()).release(case, dry_run=_dry_run(req)),
                         "mde_release")


@bp.route(route="response/mde/actions/{id}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@traced("mde_action_status")
def mde_action_status(req: func.HttpRequest) -> func.HttpResponse:
    """The Location of the asynchronous pattern: 202 while pending, 200 with Succeeded / Failed / ...

    Anonymous route: the signature in the URL is checked before anything is read (403 when it is missing,
    wrong, for another operation or expired)."""
    from core.errors import Forbidden
    from core.links import LinkSigner
    from response.isolation import POLL_SECONDS, MachineResponse

    reference = req.route_params.get("id", "")
    expires, signature = req.params.get("expires"), req.params.get("sig")
    try:
        if not LinkSigner.from_settings(_ctx().settings).valid(STATUS_LINK, reference, expires=expires,
                                                               signature=signature):
            raise Forbidden("this status link is not valid for this operation, or it has expired",
                            code="InvalidStatusLink")
        status, body = MachineResponse(_ctx()).status(reference)
        headers = {"Location": _status_url(req, reference, int(str(expires))),
                   "Retry-After": str(POLL_SECONDS)} if status == 202 else {}
    except PackError as error:
        log.warning("action=mde_action_status status=%s code=%s message=%s", error.status, error.code, error.message)
        return error_response(error)
    return json_response(body, status, headers)


# -- Entra ID --------------------------------------------------------------------------------------
def _users(req: func.HttpRequest, method: str, name: str) -> func.HttpResponse:
    def action(case: Case) -> dict[str, Any]:
        from response.users import UserResponse

        return getattr(UserResponse(_ctx()), method)(case, dry_run=_dry_run(req))

    return run_action(req, action, name=name)


@bp.route(route="response/entra/confirm-compromised", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
def entra_confirm_compromised(req: func.HttpRequest) -> func.HttpResponse:
    """Confirm the incident's users compromised in Identity Protection (needs Entra ID P2)."""
    return _users(req, "confirm_compromised", "entra_confirm_compromised")


@bp.route(route="response/entra/revoke-sessions", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
def entra_revoke_sessions(req: func.HttpRequest) -> func.HttpResponse:
    """Revoke the sign-in sessions (refresh tokens) of the incident's users."""
    return _users(req, "revoke_sessions", "entra_revoke_sessions")


@bp.route(route="response/entra/disable-user", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
def entra_disable_user(req: func.HttpRequest) -> func.HttpResponse:
    """Disable the incident's user accounts (an account already disabled is reported, not an error)."""
    return _users(req, "disable", "entra_disable_user")


@bp.route(route="response/entra/enable-user", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
def entra_enable_user(req: func.HttpRequest) -> func.HttpResponse:
    """Enable the incident's user accounts again: the undo of disable-user, with the same guardrails and audit."""
    return _users(req, "enable", "entra_enable_user")


# -- IP blocking -----------------------------------------------------------------------------------
@bp.route(route="response/block-ip", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
def block_ip(req: func.HttpRequest) -> func.HttpResponse:
    """Block the incident's public IPs: Defender indicator (AlertAndBlock) and the firewall block list."""
    from response.ipblock import IpResponse

    return run_action(req, lambda case: IpResponse(_ctx()).block(case, dry_run=_dry_run(req)), name="block_ip")


@bp.route(route="response/unblock-ip", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
def unblock_ip(req: func.HttpRequest) -> func.HttpResponse:
    """Remove the blocks of the incident's IPs (indicator and block-list entry)."""
    from response.ipblock import IpResponse

    return run_action(req, lambda case: IpResponse(_ctx()).unblock(case, dry_run=_dry_run(req)), name="unblock_ip")


# -- file, URL and domain blocking (issue 18.6) ---------------------------------------------------------
@bp.route(route="response/block-indicators", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
def block_indicators(req: func.HttpRequest) -> func.HttpResponse:
    """Block the incident's files, URLs and domains as Defender indicators, within BLOCK_INDICATOR_VERDICTS."""
    from response.indicatorblock import IndicatorResponse

    return run_action(req, lambda case: IndicatorResponse(_ctx()).block(case, dry_run=_dry_run(req)),
                      name="block_indicators")


@bp.route(route="response/unblock-indicators", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
def unblock_indicators(req: func.HttpRequest) -> func.HttpResponse:
    """Remove the pack's blocks of the incident's files, URLs and domains (the undo of block-indicators)."""
    from response.indicatorblock import IndicatorResponse

    return run_action(req, lambda case: IndicatorResponse(_ctx()).unblock(case, dry_run=_dry_run(req)),
                      name="unblock_indicators")


@bp.route(route="response/blocklist", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
@traced("ip_blocklist")
def ip_blocklist(req: func.HttpRequest) -> func.HttpResponse:
    """The external dynamic list: blocked, unexpired IPs, one per line (``?code=<function key>``)."""
    from response.blocklist import BlockList, render_edl

    try:
        text = render_edl(BlockList(_ctx().state).active())
    except PackError as error:
        log.warning("action=ip_blocklist status=%s code=%s", error.status, error.code)
        return error_response(error)
    return func.HttpResponse(text, status_code=200, mimetype="text/plain", charset="utf-8",
                             headers={"Cache-Control": "no-store"})


# -- the user's own confirmation (issue 13; response/ask_user.py) ------------------------------------------------
@bp.route(route="response/entra/ask-user", methods=["POST", "DELETE"], auth_level=func.AuthLevel.FUNCTION)
def entra_ask_user(req: func.HttpRequest) -> func.HttpResponse:
    """HTTP-webhook subscribe (POST: ask each account of the incident "Was this you?" by mail) and unsubscribe."""
    from core.api import run_json
    from response.ask_user import AskUser

    if req.method.upper() == "DELETE":
        return run_json(req, lambda body: AskUser(_ctx()).unsubscribe(body), name="ask_user_unsubscribe")
    parts = urlsplit(req.url)
    return run_json(req, lambda body: AskUser(_ctx()).subscribe(body, f"{parts.scheme}://{parts.netloc}",
                                                                 dry_run=_dry_run(req)), name="ask_user_subscribe")


@bp.route(route="response/entra/ask-user/{id}", methods=["GET", "POST"], auth_level=func.AuthLevel.ANONYMOUS)
@traced("ask_user_answer")
def entra_ask_user_answer(req: func.HttpRequest) -> func.HttpResponse:
    """The user's answer page: their Entra ID sign-in is the credential (no function key); GET only shows it."""
    from response.ask_user import page

    return page(req, _ctx())


@bp.timer_trigger(schedule="0 */1 * * * *", arg_name="timer", run_on_startup=False, use_monitor=True)
@traced("ask_user_sweep")
def ask_user_sweep(timer: func.TimerRequest) -> None:
    """Every minute: time out questions nobody answered, redeliver callbacks and comments that failed (capped)."""
    from core.settings import get_settings

    if get_settings().values.get("APPROVAL_SIGNING_KEY") is None:
        return
    from response.ask_user import AskUser

    try:
        summary = AskUser(_ctx()).sweep()
    except PackError as error:
        log.warning("ask_user_sweep stopped: %s: %s (retried at the next run)", error.code, error.message)
        return
    if any(summary.values()):
        log.info("ask_user_sweep: %s", summary)
