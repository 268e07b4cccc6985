"""Mail through Microsoft Graph ``POST /v1.0/users/{mailbox}/sendMail`` (Mail.Send).

Plain HTTP over the pack's one session and token provider: one request does not justify loading
msgraph-sdk (and its dependency tree) at cold start or on first use. Graph answers 202 with no
body; sendMail is not idempotent, so callers send through the ``SendLedger``.
"""

from __future__ import annotations

import logging
from urllib.parse import quote

import requests

from core.credentials import GRAPH_SCOPE, TokenProvider
from core.errors import ConfigurationError, DownstreamError, Forbidden
from core.http import call, error_code_of, reject_broken_json

log = logging.getLogger(__name__)


class GraphMailer:
    def __init__(self, session: requests.Session, tokens: TokenProvider, graph_endpoint: str, mailbox: str) -> None:
        self.session = session
        self.tokens = tokens
        self.endpoint = graph_endpoint.rstrip("/")
        self.mailbox = mailbox

    def send(self, to: str, subject: str, html_body: str) -> None:
        message = {
            "message": {
                "subject": subject[:255],
                "body": {"contentType": "HTML", "content": html_body},
                "toRecipients": [{"emailAddress": {"address": to}}],
            },
            "saveToSentItems": False,
        }
        url = f"{self.endpoint}/v1.0/users/{quote(self.mailbox, safe='@')}/sendMail"
        response = call(self.session, "POST", url, service="Graph", json=message,
                        headers={"Authorization": self.tokens.bearer(GRAPH_SCOPE)})
        reject_broken_json(response, "Graph")
        if 200 <= response.status_code < 300:
            return
        code = error_code_of(response) or f"HTTP {response.status_code}"
        if response.status_code == 403:
            raise Forbidden(f"Graph refused sendMail ({code}): grant the function identity Mail.Send (scoped to "
                            "the APPROVAL_MAILBOX with an application access policy)", code="GraphMailDenied")
        if response.status_code == 404:
            raise ConfigurationError(f"Graph: mailbox APPROVAL_MAILBOX not found or not mail-enabled ({code})")
        if response.status_code == 401:
            raise DownstreamError(f"Graph rejected the function's access token ({code})", code="GraphUnauthorized")
        raise DownstreamError(f"Graph refused the approval mail ({code})", code="GraphMailRejected")
