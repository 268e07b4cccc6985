"""The inbound push from ServiceNow: its signature and its payload.

The business rule (docs/servicenow-business-rule.js) signs the exact body it sends with HMAC-SHA256
under the shared secret ``SERVICENOW_WEBHOOK_SECRET`` and sends the base64 digest in
``X-ServiceNow-Signature`` (``GlideCertificateEncryption.generateMac`` returns base64). The function
key proves the caller may reach the function; the signature proves the body came from the instance
unchanged. A replayed body is harmless: the push only says "look at ticket X", and the sync reads the
ticket itself and applies what it finds, at most once.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from typing import Any

from core.case import ci_get
from core.errors import BadRequest, Unauthorized

SIGNATURE_HEADER = "X-ServiceNow-Signature"
SYS_ID = re.compile(r"^[0-9a-f]{32}$")


def sign(body: bytes, secret: str) -> str:
    """The header value for ``body``: base64 of HMAC-SHA256(secret, body)."""
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def verify(body: bytes, header: str | None, secret: str) -> None:
    """Raise Unauthorized unless ``header`` is the signature of ``body`` (constant-time compare)."""
    if not header:
        raise Unauthorized(f"missing {SIGNATURE_HEADER} header: the push must be signed", code="SignatureMissing")
    given = header.strip()
    if given.lower().startswith("sha256="):
        given = given[7:]
    if not hmac.compare_digest(given.encode(), sign(body, secret).encode()):
        raise Unauthorized(f"{SIGNATURE_HEADER} does not match the body (wrong secret, or the body was altered)",
                           code="SignatureMismatch")


def parse_push(payload: Any) -> tuple[str, int | None]:
    """(ticket sys_id, sys_mod_count or None) from the pushed JSON; BadRequest naming what is wrong."""
    if not isinstance(payload, dict):
        raise BadRequest("the push body must be a JSON object with the ticket's sys_id")
    sys_id = ci_get(payload, "sys_id")
    if not isinstance(sys_id, str) or not SYS_ID.match(sys_id.strip().lower()):
        raise BadRequest("'sys_id' must be the ticket's 32-character hexadecimal sys_id")
    raw_count = ci_get(payload, "sys_mod_count")
    count: int | None = None
    if raw_count not in (None, ""):
        if isinstance(raw_count, bool) or not str(raw_count).strip().isdigit():
            raise BadRequest("'sys_mod_count' must be a whole number (the ticket's update count)")
        count = int(str(raw_count).strip())
    return sys_id.strip().lower(), count


__all__ = ["SIGNATURE_HEADER", "parse_push", "sign", "verify"]
