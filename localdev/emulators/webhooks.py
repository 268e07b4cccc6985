"""Teams Workflows and Slack incoming webhooks on loopback.

Teams (Workflows "When a Teams webhook request is received"): ``POST /workflows/{id}/triggers/manual/
paths/invoke?api-version=2016-06-01&sp=...&sv=1.0&sig=<sig>``; the signature in the URL is the only
credential. The trigger answers 202 with an empty body as soon as the flow run starts, for any JSON:
whether the card is then posted is decided inside the run, which the sender never sees ("Post card in a
chat or channel" fails on a body that is not an Adaptive Card message, and on a message over about
28 KB: https://learn.microsoft.com/connectors/teams/#known-issues-and-limitations). So the emulator
answers 202 for every JSON body and records the run: ``messages`` holds every accepted body, ``cards``
the cards a run would post, ``failed_runs`` the runs that would fail and why. The pack validates its
cards itself (tests/orchestration/test_cards.py). A wrong signature is 401 and a body that is not JSON
is 400, both with the Logic Apps error shape.

Slack: ``POST /services/{T}/{B}/{secret}`` with ``{"text", "blocks"}``; 200 ``ok`` (text/html). Errors are
plain text: 400 ``invalid_payload`` (not JSON), ``no_text`` (neither text nor blocks), ``invalid_blocks``
(a block Slack would refuse), 404 ``no_service`` (unknown or revoked webhook), 429 with Retry-After
(``fail(429, retry_after=...)``; Slack allows about one message per second per webhook).

``messages`` holds what each accepted; ``revoke()`` turns a webhook into ``no_service``.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

from localdev.emulators.base import Emulator, Request, Response

CARD_TYPE = "application/vnd.microsoft.card.adaptive"
MESSAGE_LIMIT = 28 * 1024  # "about 28 KB" per posted message (Teams connector, known limitations)
SLACK_BLOCK_TYPES = {"section", "header", "actions", "context", "divider", "image", "rich_text", "input", "markdown"}


class TeamsWebhookEmulator(Emulator):
    name = "teams-webhook"

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.workflow_id = secrets.token_hex(16)
        self.signature = secrets.token_urlsafe(24)
        self.messages: list[Any] = []
        self.failed_runs: list[tuple[Any, str]] = []  # (body, why the flow run would fail)
        self.route("POST", r"/workflows/(?P<wf>[^/]+)/triggers/manual/paths/invoke", self._invoke)

    @property
    def webhook_url(self) -> str:
        return (f"{self.url}/workflows/{self.workflow_id}/triggers/manual/paths/invoke"
                f"?api-version=2016-06-01&sp=%2Ftriggers%2Fmanual%2Frun&sv=1.0&sig={self.signature}")

    def reset(self) -> None:
        super().reset()
        with self._lock:
            self.messages.clear()
            self.failed_runs.clear()

    @property
    def cards(self) -> list[dict]:
        """The cards the flow runs would post (runs that would fail are left out)."""
        failed = {id(body) for body, _ in self.failed_runs}
        return [m["attachments"][0]["content"] for m in self.messages if id(m) not in failed]

    @staticmethod
    def _error(status: int, code: str, message: str) -> Response:
        return Response(status, {"error": {"code": code, "message": message}})

    def _invoke(self, req: Request) -> Response:
        if req.params["wf"] != self.workflow_id or req.query.get("sig") != self.signature:
            return self._error(401, "DirectApiAuthorizationRequired",
                               "The request must be authenticated only by Shared Access scheme.")
        try:
            body = json.loads(req.body or b"null")
        except ValueError:
            return self._error(400, "InvalidRequestContent", "The request content is not valid JSON.")
        problem = self._check(body) or (f"the message is {len(req.body)} bytes, over the {MESSAGE_LIMIT} byte limit "
                                        "(Request Entity Too Large)" if len(req.body) > MESSAGE_LIMIT else None)
        with self._lock:
            self.messages.append(body)
            if problem:
                self.failed_runs.append((body, problem))
        return Response(202)

    @staticmethod
    def _check(body: Any) -> str | None:
        if not isinstance(body, dict) or body.get("type") != "message":
            return "the message must be an object with type 'message'"
        attachments = body.get("attachments")
        if not isinstance(attachments, list) or not attachments:
            return "attachments must be a non-empty list"
        for attachment in attachments:
            if not isinstance(attachment, dict) or attachment.get("contentType") != CARD_TYPE:
                return f"attachment contentType must be {CARD_TYPE}"
            content = attachment.get("content")
            if not isinstance(content, dict) or content.get("type") != "AdaptiveCard" or not content.get("version"):
                return "attachment content must be an AdaptiveCard with a version"
            if not isinstance(content.get("body", []), list):
                return "AdaptiveCard body must be a list"
        return None


class SlackWebhookEmulator(Emulator):
    name = "slack-webhook"

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.path = f"/services/T{secrets.token_hex(4).upper()}/B{secrets.token_hex(4).upper()}/{secrets.token_hex(12)}"
        self.revoked = False
        self.messages: list[dict] = []
        self.route("POST", r"/services/[^/]+/[^/]+/[^/]+", self._post)

    @property
    def webhook_url(self) -> str:
        return self.url + self.path

    def revoke(self) -> None:
        self.revoked = True

    def reset(self) -> None:
        super().reset()
        with self._lock:
            self.messages.clear()
            self.revoked = False

    def error_body(self, status: int, message: str | None = None) -> Any:
        """Slack's webhook errors are plain text, not JSON."""
        return {400: "invalid_payload", 403: "action_prohibited", 404: "no_service", 410: "channel_is_archived",
                429: "rate_limited"}.get(status, message or "internal_error")

    def _post(self, req: Request) -> Response:
        if req.path != self.path or self.revoked:
            return Response(404, "no_service")
        try:
            body = json.loads(req.body or b"null")
        except ValueError:
            return Response(400, "invalid_payload")
        if not isinstance(body, dict):
            return Response(400, "invalid_payload")
        if not body.get("text") and not body.get("blocks"):
            return Response(400, "no_text")
        if not self._blocks_ok(body.get("blocks")):
            return Response(400, "invalid_blocks")
        with self._lock:
            self.messages.append(body)
        return Response(200, "ok", {"Content-Type": "text/html"})

    @staticmethod
    def _blocks_ok(blocks: Any) -> bool:
        if blocks is None:
            return True
        if not isinstance(blocks, list) or len(blocks) > 50:
            return False
        for block in blocks:
            if not isinstance(block, dict) or block.get("type") not in SLACK_BLOCK_TYPES:
                return False
            text = block.get("text")
            if isinstance(text, dict):
                if text.get("type") not in ("plain_text", "mrkdwn") or not isinstance(text.get("text"), str):
                    return False
                limit = 150 if block["type"] == "header" else 3000
                if len(text["text"]) > limit or (block["type"] == "header" and text["type"] != "plain_text"):
                    return False
            if len(block.get("fields") or []) > 10:
                return False
            if block["type"] == "actions":
                elements = block.get("elements") or []
                if not elements or len(elements) > 25:
                    return False
                for element in elements:
                    if element.get("type") == "button" and len((element.get("text") or {}).get("text", "")) > 75:
                        return False
        return True
