"""The in-app sign-in's three routes (anonymous: whoever is not signed in must reach them; core/signin.py):

- ``GET auth/login?redirect=/api/...[&mfa=1]``: to Microsoft Entra ID, and back to ``redirect`` (one of the app's own
  paths, nothing else); ``mfa=1`` asks for a new multi-factor sign-in (``prompt=login`` and the configured
  authentication context).
- ``GET|POST auth/callback``: Entra's answer (``code``, ``state``); opens the session and goes back.
- ``GET auth/logout[?redirect=/api/...]``: ends the session (the Microsoft session itself stays, which is why a
  fresh multi-factor answer always asks for ``prompt=login``).

With ``SIGN_IN_MODE=easyauth`` App Service Authentication signs people in instead: login and logout hand over to
``/.auth/login/aad`` and ``/.auth/logout``; the callback does not exist there (404).
"""

from __future__ import annotations

import logging
from urllib.parse import parse_qsl, quote, urlsplit

import azure.functions as func

from core.pages import Page, Refused, redirect, serve_page
from core.telemetry import traced

log = logging.getLogger(__name__)
bp = func.Blueprint()


def _mode() -> str:
    from core.principal import sign_in_mode

    return sign_in_mode()


def _base_url(req: func.HttpRequest) -> str:
    from core.settings import get_settings
    from core.webhook import public_base_url

    parts = urlsplit(req.url)
    return public_base_url(get_settings(), f"{parts.scheme}://{parts.netloc}")


def _secure(base_url: str) -> bool:
    return base_url.lower().startswith("https://")


@bp.route(route="auth/login", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@traced("sign_in_start")
def sign_in_start(req: func.HttpRequest) -> func.HttpResponse:
    """Send the browser to Microsoft Entra ID; it comes back to ``redirect`` (an ``/api/`` path of this app)."""
    return serve_page(lambda: _start(req), "sign-in")


def _start(req: func.HttpRequest) -> func.HttpResponse:
    from core.signin import FLOW_COOKIE, begin, own_path, set_cookie

    target = own_path(req.params.get("redirect", ""))
    if target is None:
        raise Refused(400, "Sign-in only returns to this app's own pages (/api/...). Open the link you were sent "
                           "again.", "RedirectRefused")
    if _mode() == "easyauth":
        return redirect(f"/.auth/login/aad?post_login_redirect_uri={quote(target, safe='')}")
    base = _base_url(req)
    from core.settings import get_settings

    location, flow = begin(get_settings(), base, target, fresh_mfa=req.params.get("mfa") == "1")
    return redirect(location, [set_cookie(FLOW_COOKIE, flow, path="/api/auth", max_age=600, secure=_secure(base))])


@bp.route(route="auth/callback", methods=["GET", "POST"], auth_level=func.AuthLevel.ANONYMOUS)
@traced("sign_in_callback")
def sign_in_callback(req: func.HttpRequest) -> func.HttpResponse:
    """Microsoft Entra ID's answer: check it, redeem the code, open the session, go back to the page."""
    return serve_page(lambda: _callback(req), "sign-in callback")


def _callback(req: func.HttpRequest) -> func.HttpResponse:
    from core.context import get_context
    from core.signin import FLOW_COOKIE, SESSION_COOKIE, SignInRefused, complete, set_cookie

    if _mode() != "app":
        raise Refused(404, "The app's own sign-in is off here (SIGN_IN_MODE=easyauth).", "SignInOff")
    if req.method.upper() == "POST":
        answer = dict(parse_qsl((req.get_body() or b"").decode("utf-8", "replace")))
    else:
        answer = dict(req.params.items())
    answer = {k: answer[k] for k in ("code", "state", "error", "error_description", "client_info", "session_state")
              if k in answer}
    base = _base_url(req)
    secure = _secure(base)
    ctx = get_context()
    clear_flow = set_cookie(FLOW_COOKIE, "", path="/api/auth", max_age=0, secure=secure)
    try:
        session, target = complete(ctx.settings, req.headers, answer, state_store=ctx.state)
    except SignInRefused as refused:
        log.warning("sign-in refused: %s (%s)", refused.code, refused.status)
        page = Page(refused.status, "Not signed in", f"The sign-in did not complete: {refused.message}. Nothing was "
                                                     "recorded.", tone="error")
        response = page.response()
        if refused.code not in ("StateMissing", "StateMismatch"):  # a stray answer must not end a sign-in under way
            response.headers.add("Set-Cookie", clear_flow)
        return response
    cookie = set_cookie(SESSION_COOKIE, session, path="/api", max_age=int(ctx.settings["SIGN_IN_SESSION_MINUTES"]) * 60,
                        secure=secure)
    return redirect(target, [cookie, clear_flow])


@bp.route(route="auth/logout", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@traced("sign_out")
def sign_out(req: func.HttpRequest) -> func.HttpResponse:
    """End the session on this app (the cookie is cleared); optionally back to one of the app's pages."""
    return serve_page(lambda: _logout(req), "sign-out")


def _logout(req: func.HttpRequest) -> func.HttpResponse:
    from core.signin import SESSION_COOKIE, own_path, set_cookie

    target = own_path(req.params.get("redirect", ""))
    if _mode() == "easyauth":
        return redirect("/.auth/logout" + (f"?post_logout_redirect_uri={quote(target, safe='')}" if target else ""))
    clear = set_cookie(SESSION_COOKIE, "", path="/api", max_age=0, secure=_secure(_base_url(req)))
    if target:
        return redirect(target, [clear])
    text = ("You are signed out of the playbook pages. Your Microsoft account may still be signed in in this "
            "browser; close it on a shared computer.")
    response = Page(200, "Signed out", text, tone="ok").response()
    response.headers.add("Set-Cookie", clear)
    return response


__all__ = ["bp"]
