"""The links the pack builds (status URLs of asynchronous actions, approval links): their base and credential.

- **Base URL**: ``PUBLIC_BASE_URL``, never the request's ``Host`` header. A caller chooses the Host it sends
  (``Host: approvals.evil.example``), so a link built from it can point anywhere. Outside ``LOCAL_MODE`` the
  setting is required and its absence is a ``ConfigurationError`` naming it; the local stack (``LOCAL_MODE``)
  may fall back to the origin the caller used, because its host listens on a port chosen at start.
- **No key in a URL**: a function key in a URL ends up in run histories, proxies and logs, and a call made
  with the master key would hand the master key out. A link's credential is instead an HMAC-SHA256
  signature over its purpose, the resource it names and its expiry (``LinkSigner``): it opens that one
  resource until then and nothing else. Logic Apps poll a 202 ``Location`` reusing only the action's
  ``authentication`` block, not its headers, so such a route is anonymous and checks the signature itself.

The key is ``APPROVAL_SIGNING_KEY`` (a Key Vault secret the deployment already has); every signature starts
with its purpose (``mde-status``, ...), so a signature made for one kind of link never verifies as another.
"""

from __future__ import annotations

import time
from urllib.parse import urlsplit

from core.errors import ConfigurationError
from core.settings import Settings
from core.signing import Signer

KEY_SETTING = "APPROVAL_SIGNING_KEY"


def base_url(settings: Settings, origin: str | None = None) -> str:
    """Where links point: ``PUBLIC_BASE_URL``; in ``LOCAL_MODE`` only, the caller's origin when it is unset."""
    configured = settings["PUBLIC_BASE_URL"]
    if configured:
        return str(configured).rstrip("/")
    if settings["LOCAL_MODE"] and origin:
        parts = urlsplit(origin)
        return f"{parts.scheme}://{parts.netloc}"
    raise ConfigurationError("setting PUBLIC_BASE_URL is required to build links (the function app's "
                             "https://<name>.azurewebsites.net); the request's Host header is never trusted")


class LinkSigner:
    """Signs and checks ``(purpose, resource..., expiry)`` with the pack's one HMAC signer (core/signing.py)."""

    def __init__(self, key: str) -> None:
        self._signer = Signer(key, KEY_SETTING)

    def __repr__(self) -> str:
        return "LinkSigner(***)"

    @classmethod
    def from_settings(cls, settings: Settings) -> LinkSigner:
        settings.require(KEY_SETTING)
        return cls(str(settings[KEY_SETTING]))

    def sign(self, purpose: str, *parts: str, expires: int) -> str:
        return self._signer.sign("link-v1", purpose, *parts, int(expires))

    def valid(self, purpose: str, *parts: str, expires: str | int | None, signature: str | None,
              now: float | None = None) -> bool:
        """True only for an unexpired link whose signature matches (constant-time comparison)."""
        try:
            moment = int(str(expires))
        except ValueError:
            return False
        if not signature or moment < (time.time() if now is None else now):
            return False
        return self._signer.valid(signature, "link-v1", purpose, *parts, moment)


__all__ = ["LinkSigner", "base_url"]
