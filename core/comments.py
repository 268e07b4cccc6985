"""Incident comments the Defender portal shows: new information as new comments, within a budget.

Two facts shape every comment the pack writes (issue #15, item 11):
- Sentinel keeps at most 100 comments per incident (``../shared/contracts/README.md``; the ARM emulator
  answers 400 past it). Analysts, the ServiceNow sync and every playbook share those 100.
- In the Defender portal, where Sentinel is moving (the Azure portal experience ends on 2027-03-31),
  editing a comment is not supported and edits are not synchronised. So a comment is never rewritten with
  new content: new information gets a new comment under its own deterministic id. Only a retry of the
  same content may PUT the same id again (idempotent, nothing changes).

``CommentBudget.write`` is the one way an action adds a comment. It reads the incident's comment count
(``properties.additionalData.commentsCount``, IncidentAdditionalData in the 2025-09-01 spec) from the
incident the action already read, else with one GET, and:
- while more than ``reserve + 1`` of the 100 slots are free, writes the comment;
- when exactly ``reserve + 1`` are free, writes one summary comment instead: this run's message,
  shortened, under a notice that the pack stops commenting here (its id derives from the run's key, so a
  retry rewrites the same summary, and two runs racing for the last slot each write their own, which the
  reserve absorbs);
- past that, writes nothing (``skipped``) and the action's answer and logs carry the result; a retry of a
  comment that already exists still PUTs it (one GET of that comment tells).
``reserve`` (``SENTINEL_COMMENT_RESERVE``, default 10) is what the pack leaves to analysts.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from core.concurrency import run_all
from core.errors import BadRequest
from core.sentinel import COMMENT_MAX_CHARS, SentinelClient, comment_id

log = logging.getLogger(__name__)

MAX_COMMENTS = 100  # per incident, Sentinel's limit


def comments_count(incident: dict | None) -> int | None:
    """The incident's comment count as ARM reports it (None when the resource does not say)."""
    data = ((incident or {}).get("properties") or {}).get("additionalData") or {}
    value = data.get("commentsCount") if isinstance(data, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


@dataclass(frozen=True)
class Written:
    """What ``CommentBudget.write`` did: ``written`` | ``summary`` | ``skipped``, and the id it wrote."""

    outcome: str
    comment_id: str | None
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.outcome in ("written", "summary")


class CommentBudget:
    def __init__(self, sentinel: SentinelClient, reserve: int = 10, limit: int = MAX_COMMENTS) -> None:
        self.sentinel = sentinel
        self.reserve = max(0, reserve)
        self.limit = limit

    @classmethod
    def from_settings(cls, sentinel: SentinelClient) -> CommentBudget:
        from core.settings import get_settings

        return cls(sentinel, int(get_settings()["SENTINEL_COMMENT_RESERVE"]))

    def write(self, incident_id: str, key: str, message: str, *, incident: dict | None = None) -> Written:
        """Write comment ``key`` unless the incident's comment budget is spent (see the module doc)."""
        count = comments_count(incident)
        if count is None:
            count = comments_count(self.sentinel.get_incident(incident_id))
        free = None if count is None else self.limit - count
        if free is None or free > self.reserve + 1:
            return self._put(incident_id, key, message, "written")
        if self.sentinel.get_comment(incident_id, key) is not None:
            return self._put(incident_id, key, message, "written")  # a retry of a comment already written
        if free == self.reserve + 1:
            return self._put(incident_id, comment_id(incident_id, "comment-budget", key),
                             self.summary(count or 0, message), "summary")
        detail = (f"not commented: the incident holds {count} of Sentinel's {self.limit} comments and the pack "
                  f"leaves the last {self.reserve} to analysts")
        log.warning("comment %s on %s skipped: %s", key, incident_id.rsplit("/", 1)[-1], detail)
        return Written("skipped", None, detail)

    def write_all(self, incident_id: str, parts: list[tuple[str, str]], *, incident: dict | None = None
                  ) -> list[Written]:
        """Several comments of one run (a long table split in parts): side by side when the budget holds all of
        them, else one at a time so the budget decides for each."""
        count = comments_count(incident)
        if count is None and parts:
            incident = self.sentinel.get_incident(incident_id)
            count = comments_count(incident)
        if count is None or self.limit - count > self.reserve + len(parts):
            return run_all(*(lambda key=key, message=message: self._put(incident_id, key, message, "written")
                             for key, message in parts))
        written = []
        for key, message in parts:
            result = self.write(incident_id, key, message, incident=_counted(incident, count))
            written.append(result)
            if not result.ok:
                break
            count += 1
        return written

    def _put(self, incident_id: str, key: str, message: str, outcome: str) -> Written:
        try:
            self.sentinel.put_comment(incident_id, key, message)
        except BadRequest as refused:
            # Comments added since our count (analysts, other runs) may have used the last slot.
            if (comments_count(self.sentinel.get_incident(incident_id)) or 0) >= self.limit:
                log.warning("comment %s refused: the incident holds %d comments", key, self.limit)
                return Written("skipped", None, f"not commented: the incident holds {self.limit} comments, "
                                                "Sentinel's limit")
            raise refused
        return Written(outcome, key)

    def summary(self, count: int, message: str) -> str:
        """The last comment the pack writes on an incident: the notice, then this run's message shortened."""
        notice = (f"<p><b>sentinel-playbooks: comment budget reached</b> · this incident holds {count + 1} of "
                  f"Sentinel's {self.limit} comments. The pack adds no further comments and leaves the last "
                  f"{self.reserve} to analysts; later results are in each playbook run's history and in the "
                  "function's logs (Application Insights, search for the incident id).</p><hr/>")
        room = COMMENT_MAX_CHARS - len(notice) - 200
        if len(message) > room:
            message = message[:room] + "<p><i>(shortened)</i></p>"
        return notice + message


def _counted(incident: dict | None, count: int) -> dict:
    """The incident with its comment count set to ``count`` (after this run's own earlier parts)."""
    properties = dict((incident or {}).get("properties") or {})
    properties["additionalData"] = dict(properties.get("additionalData") or {}) | {"commentsCount": count}
    return {**(incident or {}), "properties": properties}


def notice_text(written: Written) -> str | None:
    """A line for an action's JSON answer when its comment was not written in full."""
    if written.outcome == "skipped":
        return written.detail
    if written.outcome == "summary":
        return "the incident's comment budget is reached: this was the pack's last comment on it (a summary)"
    return None


__all__ = ["MAX_COMMENTS", "CommentBudget", "Written", "comments_count", "notice_text"]
