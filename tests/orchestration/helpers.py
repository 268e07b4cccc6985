"""Helpers of the orchestration tests: callback receiver, approval links, signed-in people."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import threading
import uuid
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import requests

from localdev.easyauth import hidden_fields
from localdev.easyauth import press as press_button
from localdev.emulators.base import Emulator, Request, Response
from localdev.playbooks import PlaybookRunner, bicep_parameters, load_playbook


class CallbackReceiver(Emulator):
    """What ``listCallbackUrl()`` points at: records the POSTs that resume a waiting run."""

    name = "logic-app-callback"

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.arrived = threading.Condition()
        self.route("POST", r"/workflows/(?P<run>[^/]+)/callback", self._callback)

    def new_url(self) -> str:
        return f"{self.url}/workflows/{uuid.uuid4().hex}/callback?sig=logic-app-sas"

    def _callback(self, req: Request) -> Response:
        with self.arrived:
            self.arrived.notify_all()
        return Response(200)

    def bodies(self, url: str) -> list[dict]:
        path = urlsplit(url).path
        return [r.json for r in self.requests_to("POST", "^" + path + "$")]


def links_in(text: str) -> list[str]:
    """Personal approval links (one choice for one approver) in a mail body or a chat message."""
    return [link.replace("&amp;", "&") for link in re.findall(r"https?://[^\s\"'<>\\]+/api/orchestration/approvals/"
                                                              r"[0-9a-f]{32}/[A-Za-z_-]+\?[^\s\"'<>\\]+", text)
            if "approver=" in link]


def link_for(links: list[str], choice: str) -> str:
    (link,) = [link for link in links if urlsplit(link).path.rsplit("/", 1)[-1].lower() == choice.lower()]
    return link


def resign(link: str, key: str, **changes: str) -> str:
    """The link with ``changes`` to its query, signed properly with ``key`` (an insider's valid link)."""
    parts = urlsplit(link)
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    query.update(changes)
    approval_id, choice = parts.path.rsplit("/", 2)[-2:]
    text = f"v1\n{approval_id}\n{choice.lower()}\n{query['approver'].lower()}\n{query['expires']}"
    query["sig"] = base64.urlsafe_b64encode(hmac.new(key.encode(), text.encode(), hashlib.sha256).digest()
                                            ).rstrip(b"=").decode()
    return f"{parts.scheme}://{parts.netloc}{parts.path}?{urlencode(query)}"


# -- people in a browser: signed in through the host's Easy Auth ---------------------------------------------
def person(stack, host_url: str, upn: str, *, mfa: bool = True) -> requests.Session:
    """A requests Session signed in as ``upn`` (it keeps the AppServiceAuthSession cookie), like a browser."""
    http = requests.Session()
    stack.sign_in(http, host_url, upn, mfa=mfa)
    return http


def form_of(page: requests.Response) -> dict[str, str]:
    """The hidden fields of the page's form (the anti-CSRF token)."""
    return hidden_fields(page.text)


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def press(http: requests.Session, link: str, choice: str) -> requests.Response:
    """What a browser does: open the approval page, press the button (a same-origin form POST with its token)."""
    return press_button(http, link, "confirm", choice)


def review_link(text: str) -> str:
    (link,) = {link.replace("&amp;", "&") for link in re.findall(
        r"https?://[^\s\"'<>\\]+/api/orchestration/approvals/[0-9a-f]{32}/review\?[^\s\"'<>\\]+", text)}
    return link


class Started:
    """A playbook run in a thread: it blocks in its HTTP-webhook wait until someone decides or answers."""

    def __init__(self, host, playbook: Path, incident, **parameters) -> None:
        params = bicep_parameters(host.host.url, host.host.function_key) | parameters
        self.runner = PlaybookRunner(load_playbook(playbook), params, time_scale=0.01)
        self.result = None
        self.thread = threading.Thread(target=self._run, args=(incident,), daemon=True)
        self.thread.start()

    def _run(self, incident) -> None:
        try:
            self.result = self.runner.run(incident)
        finally:
            self.runner.close()

    def join(self):
        self.thread.join(60)
        assert self.result is not None, "the playbook run did not finish"
        return self.result
