"""Process-wide dependencies, built on first use and shared by every invocation.

One session (connection pooling), one token provider (token cache), one Sentinel client and one
state store per worker process: building them per call would cost a TLS handshake and a token
request each time.

``read_case`` is how an action reads what it needs from ARM once (issue #16): the incident (its etag,
labels, severity and comment count serve every later write of the action) and, for a manual run, its
entities, side by side.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import cached_property

import requests

from core.case import Case
from core.comments import CommentBudget
from core.concurrency import run_all
from core.credentials import TokenProvider, get_token_provider
from core.http import session_from_settings
from core.sentinel import SentinelClient
from core.settings import Settings, get_settings
from core.state import StateStore, get_state_store
from core.workspace import Pinning


@dataclass(frozen=True)
class CaseView:
    """A case with its entities, and the incident resource as this action read it (None without an incident)."""

    case: Case
    incident: dict | None


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
    def pinning(self) -> Pinning:
        return Pinning.from_settings(self.settings)

    @cached_property
    def sentinel(self) -> SentinelClient:
        return SentinelClient(self.session, self.tokens, str(self.settings["ARM_ENDPOINT"]), pinning=self.pinning)

    @cached_property
    def comments(self) -> CommentBudget:
        """The one way actions add incident comments: new information as new comments, within the budget."""
        return CommentBudget(self.sentinel, int(self.settings["SENTINEL_COMMENT_RESERVE"]))

    @cached_property
    def state(self) -> StateStore:
        return get_state_store()

    def with_entities(self, case: Case) -> Case:
        """A manual run ({"incidentArmId": ...}) carries no entities: read them through ARM."""
        if case.entities_included or not case.incident_id:
            return case
        return case.with_entities(self.sentinel.list_entities(case.incident_id), int(self.settings["MAX_ENTITIES"]))

    def read_case(self, case: Case, *, incident: bool = True) -> CaseView:
        """The case with its entities and (``incident``) the incident resource, read side by side: one read of
        each per action."""
        if not case.incident_id or not incident:
            return CaseView(self.with_entities(case), None)
        incident_id = case.incident_id
        if case.entities_included:
            return CaseView(case, self.sentinel.get_incident(incident_id))
        full, resource = run_all(lambda: self.with_entities(case), lambda: self.sentinel.get_incident(incident_id))
        return CaseView(full, resource)


_context: Context | None = None
_lock = threading.Lock()


def get_context() -> Context:
    global _context
    if _context is None:
        with _lock:
            if _context is None:
                _context = Context(get_settings())
    return _context
