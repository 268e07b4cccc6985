"""Microsoft Graph ``sendMail`` on loopback: ``POST /v1.0/users/{id | userPrincipalName}/sendMail``.

The contract (Graph v1.0 user: sendMail): a bearer token for https://graph.microsoft.com (else 401
``InvalidAuthenticationToken``), body ``{"message": {"subject", "body": {"contentType": "Text" | "HTML",
"content"}, "toRecipients": [{"emailAddress": {"address"}}], ...}, "saveToSentItems": bool}``; 202
with an empty body. A message without recipients is 400 ``ErrorInvalidRecipients``; a mailbox the
emulator does not know is 404 ``ErrorInvalidUser`` (``MailboxNotEnabledForRESTAPI`` in real life for
mailboxes without Exchange Online).

``install_send_mail(emulator, authority, mailboxes)`` adds the route to any emulator (so it can
share a Graph emulator's base URL); ``GraphMailEmulator`` is the stand-alone one.
"""

from __future__ import annotations

import json
import threading
from typing import Any

from localdev.emulators.base import Emulator, Request, Response
from localdev.emulators.entra import GRAPH_AUDIENCE


class Outbox:
    """What sendMail accepted, one dict per message: sender, to, subject, body, contentType."""

    def __init__(self, authority: Any = None, mailboxes: tuple[str, ...] = ()) -> None:
        self.authority = authority
        self.mailboxes = {m.lower() for m in mailboxes}
        self.sent: list[dict] = []
        self._lock = threading.Lock()

    def clear(self) -> None:
        with self._lock:
            self.sent.clear()

    def to(self, address: str) -> list[dict]:
        with self._lock:
            return [m for m in self.sent if address.lower() in m["to"]]

    def handle(self, req: Request) -> Response:
        if self.authority is not None and (denied := self.authority.check(req, GRAPH_AUDIENCE)):
            return denied
        user = req.params["user"].lower()
        if self.mailboxes and user not in self.mailboxes:
            return _error(404, "ErrorInvalidUser", f"The requested user '{user}' is invalid.")
        try:
            body = json.loads(req.body or b"null")
        except ValueError:
            return _error(400, "RequestBodyRead", "Unable to read JSON request payload.")
        message = body.get("message") if isinstance(body, dict) else None
        if not isinstance(message, dict):
            return _error(400, "ErrorInvalidRequest", "The 'message' property is required.")
        recipients = [((r or {}).get("emailAddress") or {}).get("address") for r in message.get("toRecipients") or []]
        if not recipients or not all(isinstance(r, str) and "@" in r for r in recipients):
            return _error(400, "ErrorInvalidRecipients", "At least one recipient isn't valid.")
        content = message.get("body") or {}
        if str(content.get("contentType", "Text")).lower() not in ("text", "html"):
            return _error(400, "ErrorInvalidRequest", "contentType must be Text or HTML.")
        with self._lock:
            self.sent.append({"from": user, "to": [r.lower() for r in recipients], "subject": message.get("subject"),
                              "body": content.get("content", ""), "contentType": content.get("contentType", "Text"),
                              "saveToSentItems": body.get("saveToSentItems", True)})
        return Response(202)


def _error(status: int, code: str, message: str) -> Response:
    return Response(status, {"error": {"code": code, "message": message}})


def install_send_mail(emulator: Emulator, authority: Any = None, mailboxes: tuple[str, ...] = ()) -> Outbox:
    outbox = Outbox(authority, mailboxes)
    emulator.route("POST", r"/v1\.0/users/(?P<user>[^/]+)/sendMail", outbox.handle)
    return outbox


class GraphMailEmulator(Emulator):
    """Stand-alone Graph with only sendMail (when no other Graph emulator serves GRAPH_ENDPOINT)."""

    name = "graph-mail"

    def __init__(self, authority: Any = None, mailboxes: tuple[str, ...] = (), **kw) -> None:
        super().__init__(**kw)
        self.outbox = install_send_mail(self, authority, mailboxes)

    def reset(self) -> None:
        super().reset()
        self.outbox.clear()
