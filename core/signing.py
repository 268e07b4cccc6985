"""HMAC signatures for the links the pack mails and the forms its pages post: one key, several purposes.

Every signature covers a purpose prefix and ``\\n``-joined fields, so a value signed for one purpose
(a link, an approval id, a form token) is never valid for another. Comparisons are constant time; the key
(``APPROVAL_SIGNING_KEY``, a Key Vault reference in Azure) is never shown.

Form tokens (anti-CSRF): a page that lets a signed-in person decide embeds ``issued.mac`` where the MAC
covers the page's subject (an approval or question id), the signed-in object id and a hash of the sign-in
session cookie. A cross-site form cannot read it (same-origin policy) nor compute it (no key), and a token
lifted from one session or person does not work for another; it expires after ``FORM_TOKEN_SECONDS``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

from core.errors import ConfigurationError

MIN_KEY_LENGTH = 32
FORM_TOKEN_SECONDS = 3600


class Signer:
    """HMAC-SHA256 over purpose-prefixed fields."""

    def __init__(self, key: str, setting: str = "APPROVAL_SIGNING_KEY") -> None:
        if len(key) < MIN_KEY_LENGTH:
            raise ConfigurationError(f"setting {setting} must be at least {MIN_KEY_LENGTH} characters")
        self._key = key.encode()

    def __repr__(self) -> str:
        return "Signer(***)"

    def mac(self, *fields: object) -> bytes:
        return hmac.new(self._key, "\n".join(str(f) for f in fields).encode(), hashlib.sha256).digest()

    def sign(self, *fields: object) -> str:
        """base64url (unpadded) HMAC of the fields: what goes into a URL or a hidden form field."""
        return base64.urlsafe_b64encode(self.mac(*fields)).rstrip(b"=").decode()

    def valid(self, signature: str, *fields: object) -> bool:
        if not signature or len(signature) > 100:
            return False
        return hmac.compare_digest(self.sign(*fields).encode(), signature.encode("utf-8", "replace"))

    def derive_id(self, *fields: object) -> str:
        """A stable, unguessable 32-hex id (e.g. of a callback URL, so a retried subscribe finds its record)."""
        return self.mac("id", *fields).hex()[:32]

    # -- anti-CSRF form tokens ------------------------------------------------------------------
    def form_token(self, subject: str, person: str, session: str, now: float | None = None) -> str:
        issued = int(time.time() if now is None else now)
        return f"{issued}.{self.sign('form', subject, person.lower(), _digest(session), issued)}"

    def form_token_valid(self, token: str, subject: str, person: str, session: str, now: float | None = None) -> bool:
        issued_text, _, signature = (token or "").partition(".")
        if not issued_text.isdigit():
            return False
        issued = int(issued_text)
        age = (time.time() if now is None else now) - issued
        return 0 <= age + 60 <= FORM_TOKEN_SECONDS + 60 and self.valid(signature, "form", subject, person.lower(),
                                                                          _digest(session), issued)


def _digest(session: str) -> str:
    return hashlib.sha256(session.encode()).hexdigest()


__all__ = ["FORM_TOKEN_SECONDS", "MIN_KEY_LENGTH", "Signer"]
