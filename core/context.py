"""Process-wide dependencies, built on first use and shared by every invocation.

One session (connection pooling), one token provider (token cache), one Sentinel client and one
state store per worker process: building them per call would cost a TLS handshake and a token
request each time.
"""

from __future__ import annotations

import threading
from functools import cached_property

import requests

from core.case import Case
from core.credentials import TokenProvider, get_token_provider
from core.http import session_from_settings
from core.sentinel import SentinelClient
from core.settings import Settings, get_settings
from core.state import StateStore, get_state_store


class Context:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @cached_property
    def session(self) -> requests.Session:
        return session_from_settings(self.settings)

    @cached_property
    def vt_session(self) -> requests.Session:
        """VirusTotal's 429 means the key's quota is spent: retrying at once only wastes it."""
        return session_from_settings(self.settings, retry_statuses=(500, 502, 503, 504))

    @cached_property
    def tokens(self) -> TokenProvider:
        return get_token_provider()

    @cached_property
    def sentinel(self) -> SentinelClient:
        return SentinelClient(self.session, self.tokens, str(self.settings["ARM_ENDPOINT"]))

    @cached_property
    def state(self) -> StateStore:
        return get_state_store()

    def with_entities(self, case: Case) -> Case:
        """A manual run ({"incidentArmId": ...}) carries no entities: read them through ARM."""
        if case.entities_included or not case.incident_id:
            return case
        return case.with_entities(self.sentinel.list_entities(case.incident_id), int(self.settings["MAX_ENTITIES"]))


_context: Context | None = None
_lock = threading.Lock()


def get_context() -> Context:
    global _context
    if _context is None:
        with _lock:
            if _context is None:
                _context = Context(get_settings())
    return _context
