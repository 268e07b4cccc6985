"""One error model for every action.

Actions raise a ``PackError``; ``core.api`` turns it into the JSON answer
``{"error": {"code", "message"}}`` with the status that tells the Logic App whether to
retry (429/502/503 with ``Retry-After``) or to stop (4xx, configuration errors).
Messages are written for the SOC engineer reading the run history, and never carry a secret.
"""

from __future__ import annotations


class PackError(Exception):
    """Base of every error an action answers with."""

    status = 500
    code = "InternalError"

    def __init__(self, message: str, *, code: str | None = None, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        self.retry_after = retry_after

    def body(self) -> dict:
        return {"error": {"code": self.code, "message": self.message}}


class BadRequest(PackError):
    """The payload is malformed or cannot be used (the Logic App must not retry)."""

    status = 400
    code = "BadRequest"


class PayloadTooLarge(BadRequest):
    status = 413
    code = "PayloadTooLarge"


class Unauthorized(PackError):
    status = 401
    code = "Unauthorized"


class Forbidden(PackError):
    status = 403
    code = "Forbidden"


class NotFound(PackError):
    status = 404
    code = "NotFound"


class Conflict(PackError):
    status = 409
    code = "Conflict"


class ConfigurationError(PackError):
    """A setting is missing, malformed or rejected by the service it is for."""

    status = 500
    code = "ConfigurationError"


class DownstreamError(PackError):
    """An external API failed or timed out after our own retries: the Logic App retries later."""

    status = 502
    code = "DownstreamError"

    def __init__(self, message: str, *, code: str | None = None, retry_after: int | None = 30) -> None:
        super().__init__(message, code=code, retry_after=retry_after)


class AnswerLost(DownstreamError):
    """The request went out but its answer never came (read timeout): the service may well have acted.

    Callers whose request is not idempotent (a chat message, a mail) must not send it blindly again.
    """

    code = "AnswerLost"


class Throttled(DownstreamError):
    """An external API throttled us for longer than we wait in-process."""

    status = 429
    code = "Throttled"


class Busy(DownstreamError):
    """Another run is acting on the same target right now and did not finish in time: retry shortly."""

    status = 429
    code = "Busy"


class StateUnavailable(DownstreamError):
    """The state store (Table Storage) cannot be reached: nothing was done, retry."""

    status = 503
    code = "StateUnavailable"
