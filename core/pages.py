"""The few HTML pages people see (approval decisions, the user's own confirmation): phone first, no scripts of
ours but one that shows deadlines in the reader's local time, nothing framed, nothing cached.

Layout rules a 390 px phone needs: a viewport meta (without it a phone lays the page out 980 px wide and
zooms out), one column, text that wraps anywhere (UPNs and host names are long words), buttons at least
44 px high and full width on narrow screens. Every value from an incident is escaped.

Deadlines: the server writes the deadline in ``DISPLAY_TIME_ZONE`` with UTC beside it; in a browser a tiny
inline script (allowed by its CSP hash, nothing else may run) rewrites it to the reader's own time zone.
Mails cannot run scripts, so they keep the server's rendering.
"""

from __future__ import annotations

import base64
import hashlib
import html
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import ClassVar
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import azure.functions as func

from core.errors import PackError, Unauthorized

log = logging.getLogger(__name__)

_LOCAL_TIME_SCRIPT = (
    "document.querySelectorAll('time[data-local]').forEach(function(t){var d=new Date(t.getAttribute('datetime'));"
    "if(!isNaN(d)){t.textContent=d.toLocaleString([],{weekday:'short',day:'numeric',month:'short',"
    "hour:'2-digit',minute:'2-digit',timeZoneName:'short'});}});")
_SCRIPT_HASH = base64.b64encode(hashlib.sha256(_LOCAL_TIME_SCRIPT.encode()).digest()).decode()
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    # same-origin, not no-referrer: under no-referrer a browser sends "Origin: null" on our own form POSTs (Fetch
    # standard, "append a request Origin header"), and the Origin check below needs the real one.
    "Referrer-Policy": "same-origin",
    "Content-Security-Policy": (f"default-src 'none'; style-src 'unsafe-inline'; script-src 'sha256-{_SCRIPT_HASH}'; "
                                "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
}
TONES = {"info": "#0f6cbd", "ok": "#107c10", "warn": "#bc4b09", "error": "#c50f1f"}
_STYLE = (
    "*{box-sizing:border-box}body{margin:0;font:16px/1.5 system-ui,-apple-system,'Segoe UI',sans-serif;"
    "color:#1b1b1b;background:#f5f5f5}main{max-width:42rem;margin:0 auto;padding:1rem}"
    ".card{background:#fff;border-radius:8px;padding:1rem 1.25rem;border-top:6px solid var(--tone)}"
    "h1{font-size:1.4rem;line-height:1.25;margin:.25rem 0 .75rem}h2{font-size:1.05rem;margin:1.25rem 0 .4rem}"
    "p,li,dd,dt{overflow-wrap:anywhere}dl{display:grid;grid-template-columns:minmax(6rem,auto) 1fr;gap:.25rem .75rem;"
    "margin:.5rem 0}dt{font-weight:600;color:#555}dd{margin:0}ul{padding-left:1.2rem;margin:.25rem 0}"
    ".muted{color:#555;font-size:.9rem}.off{color:#555}"
    "form{margin:1.25rem 0 0;display:flex;flex-wrap:wrap;gap:.75rem}"
    "button{font:inherit;font-weight:600;min-height:44px;padding:.6rem 1.2rem;border-radius:6px;border:1px solid #444;"
    "background:#fff;color:#1b1b1b;cursor:pointer}button.primary{background:#0f6cbd;border-color:#0f6cbd;color:#fff}"
    "button.danger{background:#c50f1f;border-color:#c50f1f;color:#fff}"
    "a.button{display:inline-block;font-weight:600;min-height:44px;padding:.6rem 1.2rem;border-radius:6px;"
    "background:#0f6cbd;color:#fff;text-decoration:none}"
    "@media (max-width:480px){main{padding:.5rem}.card{padding:1rem}dl{grid-template-columns:1fr}dt{margin-top:.4rem}"
    "button{width:100%}}"
)


# -- time ------------------------------------------------------------------------------------------
def zone(name: str | None) -> ZoneInfo:
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def deadline_text(epoch: float, zone_name: str | None = "UTC") -> str:
    """``Fri 20 Nov 2026, 14:30 CET (13:30 UTC)``; UTC alone when the zone is UTC."""
    moment = datetime.fromtimestamp(epoch, UTC)
    utc = moment.strftime("%H:%M UTC")
    tz = zone(zone_name)
    if tz.key == "UTC":
        return moment.strftime("%a %d %b %Y, ") + utc
    local = moment.astimezone(tz)
    return local.strftime("%a %d %b %Y, %H:%M %Z") + f" ({utc})"


def deadline_html(epoch: float, zone_name: str | None = "UTC") -> str:
    """The deadline for a page: rewritten to the reader's time zone in a browser, UTC beside it."""
    moment = datetime.fromtimestamp(epoch, UTC)
    server = deadline_text(epoch, zone_name).split(" (")[0]
    return (f'<time datetime="{moment.strftime("%Y-%m-%dT%H:%M:%SZ")}" data-local>{html.escape(server)}</time> '
            f'<span class="muted">({moment.strftime("%d %b %H:%M")} UTC)</span>')


# -- the page --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Button:
    label: str
    value: str
    style: str = "default"  # default | primary | danger


@dataclass(frozen=True)
class Form:
    action: str  # a same-origin path (and query)
    buttons: Sequence[Button]
    hidden: Mapping[str, str] = field(default_factory=dict)
    field_name: str = "confirm"


@dataclass(frozen=True)
class Page:
    status: int
    heading: str
    lead: str = ""
    tone: str = "info"
    facts: Sequence[tuple[str, str]] = ()  # plain text pairs
    facts_html: Sequence[tuple[str, str]] = ()  # pairs whose value is already safe HTML (deadlines)
    sections: Sequence[tuple[str, Sequence[str]]] = ()  # (title, items), plain text
    note: str = ""
    form: Form | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    link: tuple[str, str] | None = None  # (label, one of the app's own paths): a next step, e.g. sign in again

    def body(self) -> str:
        e = html.escape
        parts = [f"<h1>{e(self.heading)}</h1>"]
        if self.lead:
            parts.append(f"<p>{e(self.lead)}</p>")
        if self.facts or self.facts_html:
            rows = [f"<dt>{e(k)}</dt><dd>{e(v)}</dd>" for k, v in self.facts]
            rows += [f"<dt>{e(k)}</dt><dd>{v}</dd>" for k, v in self.facts_html]
            parts.append("<dl>" + "".join(rows) + "</dl>")
        for title, items in self.sections:
            parts.append(f"<h2>{e(title)}</h2><ul>" + "".join(f"<li>{e(i)}</li>" for i in items) + "</ul>")
        if self.form is not None:
            form = self.form
            hidden = "".join(f'<input type="hidden" name="{e(k)}" value="{e(v)}">' for k, v in form.hidden.items())
            buttons = "".join(f'<button type="submit" name="{e(form.field_name)}" value="{e(b.value)}" '
                              f'class="{e(b.style)}">{e(b.label)}</button>' for b in form.buttons)
            parts.append(f'<form method="post" action="{e(form.action)}">{hidden}{buttons}</form>')
        if self.link is not None and self.link[1].startswith("/") and not self.link[1].startswith("//"):
            parts.append(f'<p><a class="button" href="{e(self.link[1])}">{e(self.link[0])}</a></p>')
        if self.note:
            parts.append(f'<p class="muted">{e(self.note)}</p>')
        return ("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
                "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
                f"<meta name=\"robots\" content=\"noindex\"><title>{e(self.heading)}</title><style>{_STYLE}</style>"
                f"</head><body><main><div class=\"card\" style=\"--tone:{TONES.get(self.tone, TONES['info'])}\">"
                + "".join(parts) + f"</div></main><script>{_LOCAL_TIME_SCRIPT}</script></body></html>")

    def response(self) -> func.HttpResponse:
        return func.HttpResponse(self.body(), status_code=self.status, headers={**PAGE_HEADERS, **self.headers},
                                 mimetype="text/html", charset="utf-8")


def redirect(location: str, cookies: Sequence[str] = ()) -> func.HttpResponse:
    """302 to the sign-in, back to a page, or to Entra; ``cookies`` are Set-Cookie values. Nothing else."""
    response = func.HttpResponse("", status_code=302, headers={**PAGE_HEADERS, "Location": location},
                                 mimetype="text/html", charset="utf-8")
    for cookie in cookies:
        response.headers.add("Set-Cookie", cookie)  # one header per cookie (RFC 6265: never folded)
    return response


# -- cross-site checks -----------------------------------------------------------------------------
def same_origin(headers: Mapping[str, str], base_url: str) -> bool:
    """A form POST from our own page: its Origin (or, without one, its Referer) is the pack's origin.

    Browsers send Origin on every cross-origin and same-origin form POST; a request with neither is not a
    browser form of ours and is refused (a signed-in person's cookie must not decide for another site).
    """
    def origin_of(url: str) -> str:
        parts = urlsplit(url)
        return f"{parts.scheme}://{parts.netloc}".lower() if parts.scheme and parts.netloc else ""

    lowered = {k.lower(): v for k, v in headers.items()}
    expected = origin_of(base_url)
    origin = lowered.get("origin")
    if origin is not None:
        return origin.strip().lower() == expected
    referer = lowered.get("referer")
    return referer is not None and origin_of(referer) == expected


# -- the sign-in gate and the form check every deciding page applies ---------------------------------------------
def here_of(req: func.HttpRequest) -> str:
    """The request's path and query: where the sign-in sends the browser back to, and where the form posts."""
    parts = urlsplit(req.url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def origin_of(req: func.HttpRequest) -> str:
    parts = urlsplit(req.url)
    return f"{parts.scheme}://{parts.netloc}"


def sign_in_gate(req: func.HttpRequest):
    """The signed-in person, or the answer for a browser that is not signed in: GET goes to the sign-in and comes
    back, POST is 401 (nothing is decided without a person). A garbled principal raises Unauthorized."""
    from core.principal import login_url, signed_in

    principal = signed_in(req.headers)
    if principal is not None:
        return principal
    if req.method.upper() == "GET":
        return redirect(login_url(here_of(req)))
    return Page(401, "Sign in first", "This needs your work account: open the link again and sign in. Nothing was "
                                      "recorded.", tone="warn").response()


def posted_form(req: func.HttpRequest, signer, subject: str, person: str, base_url: str) -> dict[str, str] | None:
    """The fields of a form POST that came from our own page (Origin and the anti-CSRF token), else None."""
    from urllib.parse import parse_qsl

    from core.principal import session_of

    form = dict(parse_qsl((req.get_body() or b"").decode("utf-8", "replace")))
    if not same_origin(req.headers, base_url):
        return None
    if not signer.form_token_valid(form.get("csrf", ""), subject, person, session_of(req.headers)):
        return None
    return form


def form_token(req: func.HttpRequest, signer, subject: str, person: str) -> str:
    from core.principal import session_of

    return signer.form_token(subject, person, session_of(req.headers))


class Refused(PackError):
    """What a page refuses (a forged or foreign link, the wrong person, closed, expired); its message is shown."""

    HEADINGS: ClassVar[dict[int, str]] = {401: "Sign in first", 403: "Not allowed", 404: "Not found",
                                          409: "Already decided", 410: "Link expired"}

    def __init__(self, status: int, message: str, code: str, *, sections: Sequence[tuple[str, Sequence[str]]] = (),
                 link: tuple[str, str] | None = None) -> None:
        super().__init__(message, code=code)
        self.status = status
        self.sections = sections
        self.link = link


def serve_page(work: Callable[[], func.HttpResponse], name: str) -> func.HttpResponse:
    """Run a page handler; every failure becomes a page that says nothing was recorded (never a traceback)."""
    try:
        return work()
    except Refused as refused:
        log.info("%s refused: %s (%s)", name, refused.code, refused.status)
        return Page(refused.status, Refused.HEADINGS.get(refused.status, "Refused"), refused.message,
                    sections=refused.sections, tone="error" if refused.status in (403, 404) else "warn",
                    link=refused.link).response()
    except Unauthorized as error:
        log.warning("%s: %s", name, error.message)
        return Page(401, "Sign in again", f"Your sign-in could not be read ({error.message}). Sign in again; nothing "
                                          "was recorded.", tone="error").response()
    except PackError as error:
        log.warning("%s failed: %s %s", name, error.code, error.message)
        return Page(error.status, "Try again later", "This could not be processed right now; nothing was recorded. "
                                                     "Try again in a minute.", tone="warn",
                    headers={"Retry-After": str(error.retry_after)} if error.retry_after else {}).response()
    except Exception:
        log.exception("%s failed unexpectedly", name)
        return Page(500, "Error", "Unexpected error; nothing was recorded.", tone="error").response()


CROSS_SITE = Page(403, "Not allowed", "This did not come from the page itself (a cross-site request or an old page). "
                                      "Open the link again. Nothing was recorded.", tone="error")


__all__ = ["CROSS_SITE", "PAGE_HEADERS", "Button", "Form", "Page", "Refused", "deadline_html", "deadline_text",
           "form_token", "here_of", "origin_of", "posted_form", "redirect", "same_origin", "serve_page", "sign_in_gate",
           "zone"]
