"""Microsoft Sentinel incidents REST API (ARM, api-version 2025-09-01) on loopback.

Implements the part of ``../shared/contracts/sentinel/`` the playbooks touch: incidents (GET, PUT
with etag checks, the workspace's incident list), their comments, relations and tasks, and the
entities / alerts / bookmarks listings, with the errors Azure answers.

Paging: the lists the spec marks ``x-ms-pageable`` (incidents, comments, relations, tasks) answer at most
``page_size`` items (default 50; tests set small pages) and a ``nextLink`` carrying ``$skipToken``, the way
ARM pages; ``$top`` asks for smaller pages (Incidents_List allows at most 1000). The entities and alerts
lists are POSTs without paging, as in the spec. ``$filter`` and ``$orderby`` are not modelled: a request
that uses them is refused (400 ``NotModelled``) rather than answered as if they had been applied.

State lives in memory; incidents are keyed by (subscription, resource group, workspace, incident id),
lower-cased, because ARM ids are case-insensitive and trigger bodies spell ``Incidents`` where the
REST reference spells ``incidents``.

Error codes, and where they come from:
- ``MissingApiVersionParameter`` and ``NoRegisteredProviderFound`` (400): ARM's answers for a
  missing and an unregistered api-version (messages as ARM words them).
- ``InvalidRequestContent`` (400): ARM's answer to a body that is not JSON.
- ``Conflict`` (409) "New version of resource '…' exists. Data was not saved": what Sentinel
  answers a PUT whose ``etag`` is stale (reported in azsec/azure-sentinel-tools#4).
- ``BadRequest`` (400): Sentinel's validation errors (e.g. "classification 'BenignPositive' must
  have classificationReason.", seen in demisto/content#34306).
- ``NotFound`` (404): assumed, the generic ARM code; no public sample confirmed Sentinel's own.

Pass ``validator=tests.sentinel_spec.validate_request`` to also reject what the official spec
rejects; the emulator's own checks below cover what Sentinel enforces beyond the spec.
"""

from __future__ import annotations

import base64
import copy
import re
import threading
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from localdev.emulators.base import Emulator, Request, Response
from localdev.emulators.entra import ARM_AUDIENCE, EntraEmulator

API_VERSION = "2025-09-01"
MAX_COMMENT_LENGTH = 30_000
MAX_COMMENTS = 100
TASK_STATUSES = ("New", "Completed")  # IncidentTaskStatus
MAX_TOP = 1000  # Incidents_List: $top maximum

_WS = (r"/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)/providers/Microsoft\.OperationalInsights"
       r"/workspaces/(?P<ws>[^/]+)/providers/Microsoft\.SecurityInsights")
_INCIDENT = _WS + r"/incidents/(?P<incident>[^/]+)"
_INCIDENT_ID = re.compile("^" + _INCIDENT + "$", re.IGNORECASE)

# The workspace of the sample payloads: where ``seed_incident("<bare name>", ...)`` puts an incident.
DEFAULT_WORKSPACE = ("6f1c2d3e-4a5b-4c6d-8e7f-9a0b1c2d3e4f", "rg-sentinel-prod", "law-sentinel-prod")

# The identity our function app writes comments as (same shape as the samples' ClientInfo).
APP_AUTHOR = {"objectId": "f1e2d3c4-b5a6-4978-8a9b-0c1d2e3f4a5b", "email": None,
              "name": "func-sentinel-playbooks", "userPrincipalName": None}

# An analyst in the portal (ClientInfo), for changes the tests make as a person would.
ANALYST = {"objectId": "6c1d2e3f-4a5b-4c6d-8e7f-9a0b1c2d3e4f", "email": "megan.bowen@contoso.com",
           "name": "Megan Bowen", "userPrincipalName": "megan.bowen@contoso.com"}

# IncidentProperties, as the spec splits them. The x-ms-enum lists are enforced as closed lists.
ENUMS = {
    "severity": ("High", "Medium", "Low", "Informational"),
    "status": ("New", "Active", "Closed"),
    "classification": ("Undetermined", "TruePositive", "BenignPositive", "FalsePositive"),
    "classificationReason": ("SuspiciousActivity", "SuspiciousButExpected", "IncorrectAlertLogic", "InaccurateData"),
}
OWNER_TYPES = ("Unknown", "User", "Group")
REQUIRED = ("title", "severity", "status")
WRITABLE = ("title", "description", "severity", "status", "classification", "classificationComment",
            "classificationReason", "owner", "labels", "firstActivityTimeUtc", "lastActivityTimeUtc")
# Only the incident trigger carries these lists; the REST resource serves them as sub-resources.
TRIGGER_ONLY = ("relatedEntities", "alerts", "comments", "bookmarks")

Key = tuple[str, str, str, str]


def _error(status: int, code: str, message: str) -> Response:
    return Response(status, {"error": {"code": code, "message": message}})


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _etag() -> str:
    return f'"{uuid.uuid4()}"'


def _arm_id(sub: str, rg: str, ws: str, name: str) -> str:
    return (f"/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.OperationalInsights/workspaces/{ws}"
            f"/providers/Microsoft.SecurityInsights/Incidents/{name}")


@dataclass
class _Incident:
    resource: dict  # {id, name, etag, type, properties}
    entities: list[dict] = field(default_factory=list)
    alerts: list[dict] = field(default_factory=list)
    bookmarks: list[dict] = field(default_factory=list)
    comments: dict[str, dict] = field(default_factory=dict)  # lower-cased comment name -> resource
    relations: dict[str, dict] = field(default_factory=dict)  # lower-cased relation name -> resource
    tasks: dict[str, dict] = field(default_factory=dict)  # lower-cased task id -> resource

    def view(self) -> dict:
        """The resource as GET serves it, with additionalData counts that follow the sub-resources."""
        resource = copy.deepcopy(self.resource)
        props = resource["properties"]
        for name in TRIGGER_ONLY:
            props.pop(name, None)
        if isinstance(props.get("additionalData"), dict):
            props["additionalData"].update(alertsCount=len(self.alerts), bookmarksCount=len(self.bookmarks),
                                           commentsCount=len(self.comments))
        return resource


def incident_problems(props: Any) -> list[str]:
    """What Sentinel rejects in ``properties`` of a PUT incident (spec rules plus its closing rules)."""
    if not isinstance(props, dict):
        return ["'properties' is required and must be an object"]
    problems = [f"'{name}' is required" for name in REQUIRED if props.get(name) in (None, "")]
    problems += [f"{name} '{props[name]}' is not one of {', '.join(allowed)}"
                 for name, allowed in ENUMS.items() if props.get(name) is not None and props[name] not in allowed]
    owner = props.get("owner")
    if owner is not None and not isinstance(owner, dict):
        problems.append("'owner' must be an object")
    elif owner and owner.get("ownerType") is not None and owner["ownerType"] not in OWNER_TYPES:
        problems.append(f"owner.ownerType '{owner['ownerType']}' is not one of {', '.join(OWNER_TYPES)}")
    labels = props.get("labels")
    if labels is not None and not (isinstance(labels, list) and all(
            isinstance(label, dict) and isinstance(label.get("labelName"), str) for label in labels)):
        problems.append("every label needs a 'labelName'")
    if props.get("status") == "Closed" and not props.get("classification"):
        problems.append("a Closed incident must have a classification")
    if props.get("classification") == "BenignPositive" and not props.get("classificationReason"):
        problems.append("classification 'BenignPositive' must have classificationReason.")
    return problems


class SentinelArmEmulator(Emulator):
    """Sentinel incidents, comments, entities and alerts behind ARM's api-version and token checks."""

    name = "sentinel-arm"

    def __init__(self, authority: EntraEmulator | None = None,
                 validator: Callable[[str, str, dict, Any], list[str]] | None = None, **kw) -> None:
        super().__init__(**kw)
        self.authority = authority
        self.validator = validator
        self._incidents: dict[Key, _Incident] = {}
        self._state = threading.RLock()
        self.page_size = 50  # items per page of a pageable list (not documented by Microsoft; tests use 2-3)
        comment = _INCIDENT + r"/comments/(?P<comment>[^/]+)"
        relation = _INCIDENT + r"/relations/(?P<relation>[^/]+)"
        task = _INCIDENT + r"/tasks/(?P<task>[^/]+)"
        for method, pattern, handler in (
            ("GET", _WS + "/incidents", self._list_incidents),
            ("GET", _INCIDENT, self._get_incident),
            ("PUT", _INCIDENT, self._put_incident),
            ("POST", _INCIDENT + "/entities", self._list_entities),
            ("POST", _INCIDENT + "/alerts", self._list_alerts),
            ("POST", _INCIDENT + "/bookmarks", self._list_bookmarks),
            ("GET", _INCIDENT + "/comments", self._list_comments),
            ("GET", comment, self._get_comment),
            ("PUT", comment, self._put_comment),
            ("DELETE", comment, self._delete_comment),
            ("GET", _INCIDENT + "/relations", self._list_relations),
            ("GET", relation, self._get_relation),
            ("PUT", relation, self._put_relation),
            ("DELETE", relation, self._delete_relation),
            ("GET", _INCIDENT + "/tasks", self._list_tasks),
            ("GET", task, self._get_task),
            ("PUT", task, self._put_task),
            ("DELETE", task, self._delete_task),
        ):
            self.route(method, pattern, self._guarded(handler))

    def reset(self) -> None:
        super().reset()
        self.page_size = 50
        with self._state:
            self._incidents.clear()

    # -- test helpers -------------------------------------------------------------------------
    def seed_from_trigger(self, trigger_body: dict) -> str:
        """Store the incident of an incident-trigger body (with its entities, alerts and comments)."""
        obj = copy.deepcopy(trigger_body["object"])
        props = obj["properties"]
        key = self._key(obj["id"])
        incident = _Incident(obj, list(props.get("relatedEntities") or ()), list(props.get("alerts") or ()),
                             list(props.get("bookmarks") or ()),
                             {c["name"].lower(): c for c in props.get("comments") or ()})
        with self._state:
            self._incidents[key] = incident
        return obj["id"]

    def seed_incident(self, incident_id: str, properties: dict, entities: Iterable[dict] = (),
                      alerts: Iterable[dict] = ()) -> str:
        """Store an incident built from ``properties``; ``incident_id`` is an ARM id or a bare name."""
        key = self._key(incident_id)
        arm_id = incident_id if "/" in incident_id else _arm_id(*DEFAULT_WORKSPACE, incident_id)
        with self._state:
            resource = self._new_resource(arm_id)
            resource["properties"].update(copy.deepcopy(properties))
            self._incidents[key] = _Incident(resource, list(entities), list(alerts))
        return arm_id

    def incident(self, incident_id: str) -> dict:
        with self._state:
            return self._incidents[self._key(incident_id, existing=True)].view()

    def comments(self, incident_id: str) -> list[dict]:
        with self._state:
            incident = self._incidents[self._key(incident_id, existing=True)]
            return copy.deepcopy(self._ordered(incident))

    def trigger_body(self, incident_id: str, event_type: str = "Update") -> dict:
        """The incident trigger body Sentinel would post now: the envelope, and the incident's current state with
        its entities, alerts and comments inline (the shape of the samples)."""
        with self._state:
            incident = self._incidents[self._key(incident_id, existing=True)]
            obj = incident.view()
            obj["properties"].update(relatedEntities=copy.deepcopy(incident.entities),
                                     alerts=copy.deepcopy(incident.alerts),
                                     comments=copy.deepcopy(self._ordered(incident)))
        match = _INCIDENT_ID.match(obj["id"])
        sub, rg, ws = match["sub"], match["rg"], match["ws"]
        return {"eventUniqueId": str(uuid.uuid4()), "objectSchemaType": "Incident", "objectEventType": event_type,
                "workspaceInfo": {"SubscriptionId": sub, "ResourceGroupName": rg, "WorkspaceName": ws},
                "workspaceId": "8b7a6c5d-4e3f-4a2b-9c1d-0e1f2a3b4c5d", "object": obj}

    def tasks(self, incident_id: str) -> list[dict]:
        with self._state:
            incident = self._incidents[self._key(incident_id, existing=True)]
            return copy.deepcopy(self._by_created(incident.tasks))

    def analyst_task_change(self, incident_id: str, task_id: str, **changes: Any) -> dict:
        """An analyst edits a task in the portal (e.g. ``status="Completed"``): new etag, analyst as modifier."""
        with self._state:
            incident = self._incidents[self._key(incident_id, existing=True)]
            resource = incident.tasks[task_id.lower()]
            resource["properties"].update(changes, lastModifiedTimeUtc=_now(), lastModifiedBy=dict(ANALYST))
            resource["etag"] = _etag()
            return copy.deepcopy(resource)

    def touch(self, incident_id: str, **property_changes: Any) -> dict:
        """An analyst edits the incident in the portal: new etag, so a client holding the old one gets 409."""
        with self._state:
            incident = self._incidents[self._key(incident_id, existing=True)]
            incident.resource["properties"].update(property_changes, lastModifiedTimeUtc=_now())
            incident.resource["etag"] = _etag()
            return incident.view()

    # -- the contract shared by every route -------------------------------------------------
    def _guarded(self, handler: Callable[[Request, Any], Response]) -> Callable[[Request], Response]:
        """Token, api-version, JSON and spec checks, in the order ARM applies them."""

        def guarded(req: Request) -> Response:
            if self.authority is not None and (denied := self.authority.check(req, ARM_AUDIENCE)):
                return denied
            version = req.query.get("api-version")
            if not version:
                return _error(400, "MissingApiVersionParameter",
                              "The api-version query parameter (?api-version=) is required for all requests.")
            if version != API_VERSION:
                return _error(400, "NoRegisteredProviderFound",
                              f"No registered resource provider found for location 'westeurope' and API version "
                              f"'{version}' for type 'workspaces'. The supported api-versions are '{API_VERSION}'.")
            try:
                body = req.json
            except ValueError as exc:
                return _error(400, "InvalidRequestContent",
                              f"The request content was invalid and could not be deserialized: {exc}")
            if self.validator is not None and (problems := self.validator(req.method, req.path, req.query, body)):
                return _error(400, "BadRequest", "; ".join(problems))
            return handler(req, body)

        return guarded

    def _key(self, incident_id: str, *, existing: bool = False) -> Key:
        match = _INCIDENT_ID.match(incident_id)
        if match:
            return match["sub"].lower(), match["rg"].lower(), match["ws"].lower(), match["incident"].lower()
        name = incident_id.lower()
        if existing:
            with self._state:
                keys = [key for key in self._incidents if key[3] == name]
            if len(keys) == 1:
                return keys[0]
        return (*(part.lower() for part in DEFAULT_WORKSPACE), name)

    def _incident_at(self, req: Request) -> tuple[Key, _Incident | None]:
        p = req.params
        key = (p["sub"].lower(), p["rg"].lower(), p["ws"].lower(), p["incident"].lower())
        return key, self._incidents.get(key)

    @staticmethod
    def _not_found(req: Request) -> Response:
        return _error(404, "NotFound", f"Incident '{req.params['incident']}' was not found.")

    def _new_resource(self, arm_id: str) -> dict:
        """A fresh incident with the read-only properties Sentinel fills in (call under the lock)."""
        number = 1 + max((i.resource["properties"].get("incidentNumber") or 0 for i in self._incidents.values()),
                         default=1000)
        now = _now()
        return {"id": arm_id, "name": arm_id.rsplit("/", 1)[-1], "etag": _etag(),
                "type": "Microsoft.SecurityInsights/Incidents",
                "properties": {
                    "labels": [], "createdTimeUtc": now, "lastModifiedTimeUtc": now, "incidentNumber": number,
                    "incidentUrl": "https://portal.azure.com/#asset/Microsoft_Azure_Security_Insights/Incident"
                                   + arm_id,
                    "providerName": "Azure Sentinel", "providerIncidentId": str(number),
                    "relatedAnalyticRuleIds": [],
                    "additionalData": {"alertsCount": 0, "bookmarksCount": 0, "commentsCount": 0,
                                       "alertProductNames": [], "tactics": []},
                }}

    @staticmethod
    def _ordered(incident: _Incident) -> list[dict]:
        return sorted(incident.comments.values(), key=lambda c: c["properties"].get("createdTimeUtc") or "")

    @staticmethod
    def _by_created(resources: dict[str, dict]) -> list[dict]:
        return sorted(resources.values(), key=lambda r: (r["properties"].get("createdTimeUtc") or "", r["name"]))

    # -- paging (x-ms-pageable lists) -------------------------------------------------------------
    def _page(self, req: Request, items: list[dict]) -> Response:
        """One page of ``items`` and, when more remain, a ``nextLink`` that repeats the query with $skipToken."""
        for unmodelled in ("$filter", "$orderby"):
            if req.query.get(unmodelled):
                return _error(400, "NotModelled", f"the emulator does not model {unmodelled}")
        size = self.page_size
        if req.query.get("$top"):
            try:
                top = int(req.query["$top"])
            except ValueError:
                return _error(400, "BadRequest", f"$top '{req.query['$top']}' is not an integer")
            if not 0 < top <= MAX_TOP:
                return _error(400, "BadRequest", f"$top must be between 1 and {MAX_TOP}")
            size = min(size, top)
        start = 0
        if req.query.get("$skipToken"):
            try:
                start = int(base64.urlsafe_b64decode(req.query["$skipToken"].encode()).decode())
            except ValueError:
                return _error(400, "BadRequest", "The $skipToken is not valid.")
        body: dict[str, Any] = {"value": copy.deepcopy(items[start:start + size])}
        if start + size < len(items):
            token = base64.urlsafe_b64encode(str(start + size).encode()).decode()
            query = {k: v for k, v in req.query.items() if k != "$skipToken"} | {"$skipToken": token}
            body["nextLink"] = f"{self.url}{req.path}?" + urlencode(query, safe="$")
        return Response(200, body)

    def _list_incidents(self, req: Request, _body: Any) -> Response:
        p = req.params
        workspace = (p["sub"].lower(), p["rg"].lower(), p["ws"].lower())
        with self._state:
            found = [i.view() for key, i in self._incidents.items() if key[:3] == workspace]
        found.sort(key=lambda r: (r["properties"].get("createdTimeUtc") or "", r["name"]))
        return self._page(req, found)

    # -- incidents ------------------------------------------------------------------------------
    def _get_incident(self, req: Request, _body: Any) -> Response:
        with self._state:
            _, incident = self._incident_at(req)
            return Response(200, incident.view()) if incident else self._not_found(req)

    def _put_incident(self, req: Request, body: Any) -> Response:
        if not isinstance(body, dict):
            return _error(400, "BadRequest", "The request body must be an Incident object.")
        props = body.get("properties")
        if problems := incident_problems(props):
            return _error(400, "BadRequest", "; ".join(problems))
        with self._state:
            key, incident = self._incident_at(req)
            if incident and "etag" in body and body["etag"] != incident.resource["etag"]:
                return _error(409, "Conflict", f"New version of resource '{req.params['incident']}' exists. "
                                               "Data was not saved")
            created = incident is None
            if created:
                p = req.params
                incident = _Incident(self._new_resource(_arm_id(p["sub"], p["rg"], p["ws"], p["incident"])))
                self._incidents[key] = incident
            stored = incident.resource["properties"]
            # ARM PUT replaces the writable properties; read-only ones stay the server's.
            for name in WRITABLE:
                stored.pop(name, None)
            stored.update({name: copy.deepcopy(props[name]) for name in WRITABLE if props.get(name) is not None})
            stored["lastModifiedTimeUtc"] = _now()
            incident.resource["etag"] = _etag()
            return Response(201 if created else 200, incident.view())

    def _list_entities(self, req: Request, _body: Any) -> Response:
        with self._state:
            _, incident = self._incident_at(req)
            if incident is None:
                return self._not_found(req)
            counts: dict[str, int] = {}
            for entity in incident.entities:
                counts[entity.get("kind", "Unknown")] = counts.get(entity.get("kind", "Unknown"), 0) + 1
            return Response(200, {"entities": copy.deepcopy(incident.entities),
                                  "metaData": [{"entityKind": kind, "count": n} for kind, n in counts.items()]})

    def _list_alerts(self, req: Request, _body: Any) -> Response:
        with self._state:
            _, incident = self._incident_at(req)
            return Response(200, {"value": copy.deepcopy(incident.alerts)}) if incident else self._not_found(req)

    def _list_bookmarks(self, req: Request, _body: Any) -> Response:
        with self._state:
            _, incident = self._incident_at(req)
            return Response(200, {"value": copy.deepcopy(incident.bookmarks)}) if incident else self._not_found(req)

    # -- comments -------------------------------------------------------------------------------
    def _list_comments(self, req: Request, _body: Any) -> Response:
        with self._state:
            _, incident = self._incident_at(req)
            if incident is None:
                return self._not_found(req)
            return self._page(req, self._ordered(incident))

    def _get_comment(self, req: Request, _body: Any) -> Response:
        with self._state:
            _, incident = self._incident_at(req)
            if incident is None:
                return self._not_found(req)
            comment = incident.comments.get(req.params["comment"].lower())
            if comment is None:
                return _error(404, "NotFound", f"Comment '{req.params['comment']}' was not found.")
            return Response(200, copy.deepcopy(comment))

    def _put_comment(self, req: Request, body: Any) -> Response:
        props = body.get("properties") if isinstance(body, dict) else None
        message = props.get("message") if isinstance(props, dict) else None
        if not isinstance(message, str):
            return _error(400, "BadRequest", "'properties.message' is required.")
        if len(message) > MAX_COMMENT_LENGTH:
            return _error(400, "BadRequest", f"The comment message exceeds {MAX_COMMENT_LENGTH} characters.")
        name = req.params["comment"]
        with self._state:
            _, incident = self._incident_at(req)
            if incident is None:
                return self._not_found(req)
            existing = incident.comments.get(name.lower())
            if existing is None and len(incident.comments) >= MAX_COMMENTS:
                return _error(400, "BadRequest", f"An incident can have at most {MAX_COMMENTS} comments.")
            now = _now()
            created = existing["properties"]["createdTimeUtc"] if existing else now
            incident.comments[name.lower()] = {
                "id": f"{incident.resource['id']}/Comments/{name}", "name": name, "etag": _etag(),
                "type": "Microsoft.SecurityInsights/Incidents/Comments",
                "properties": {"message": message, "createdTimeUtc": created, "lastModifiedTimeUtc": now,
                               "author": dict(APP_AUTHOR)},
            }
            return Response(200 if existing else 201, copy.deepcopy(incident.comments[name.lower()]))

    def _delete_comment(self, req: Request, _body: Any) -> Response:
        with self._state:
            _, incident = self._incident_at(req)
            if incident is None:
                return self._not_found(req)
            removed = incident.comments.pop(req.params["comment"].lower(), None)
            return Response(200 if removed else 204)

    # -- relations (IncidentRelations_*) ---------------------------------------------------------
    def _list_relations(self, req: Request, _body: Any) -> Response:
        with self._state:
            _, incident = self._incident_at(req)
            return self._page(req, self._by_created(incident.relations)) if incident else self._not_found(req)

    def _get_relation(self, req: Request, _body: Any) -> Response:
        return self._get_child(req, "relations", req.params["relation"], "Relation")

    def _delete_relation(self, req: Request, _body: Any) -> Response:
        return self._delete_child(req, "relations", req.params["relation"])

    def _put_relation(self, req: Request, body: Any) -> Response:
        props = body.get("properties") if isinstance(body, dict) else None
        related = props.get("relatedResourceId") if isinstance(props, dict) else None
        if not isinstance(related, str) or not related:
            return _error(400, "BadRequest", "'properties.relatedResourceId' is required.")
        parts = related.rstrip("/").split("/")
        derived = {"relatedResourceId": related, "relatedResourceName": parts[-1],
                   "relatedResourceType": "/".join(parts[-3:-1]) if len(parts) >= 3 else ""}
        return self._put_child(req, body, "relations", req.params["relation"],
                               "Microsoft.SecurityInsights/incidents/relations", derived)

    # -- tasks (IncidentTasks_*) -----------------------------------------------------------------
    def _list_tasks(self, req: Request, _body: Any) -> Response:
        with self._state:
            _, incident = self._incident_at(req)
            return self._page(req, self._by_created(incident.tasks)) if incident else self._not_found(req)

    def _get_task(self, req: Request, _body: Any) -> Response:
        return self._get_child(req, "tasks", req.params["task"], "Task")

    def _delete_task(self, req: Request, _body: Any) -> Response:
        return self._delete_child(req, "tasks", req.params["task"])

    def _put_task(self, req: Request, body: Any) -> Response:
        props = body.get("properties") if isinstance(body, dict) else None
        if not isinstance(props, dict):
            return _error(400, "BadRequest", "'properties' is required.")
        problems = [f"'{name}' is required" for name in ("title", "status") if not props.get(name)]
        if props.get("status") and props["status"] not in TASK_STATUSES:
            problems.append(f"status '{props['status']}' is not one of {', '.join(TASK_STATUSES)}")
        if problems:
            return _error(400, "BadRequest", "; ".join(problems))
        values = {name: copy.deepcopy(props[name]) for name in ("title", "description", "status") if name in props}
        return self._put_child(req, body, "tasks", req.params["task"], "Microsoft.SecurityInsights/incidents/tasks",
                               values, track_author=True)

    # -- sub-resources shared by relations and tasks ---------------------------------------------
    def _get_child(self, req: Request, kind: str, name: str, label: str) -> Response:
        with self._state:
            _, incident = self._incident_at(req)
            if incident is None:
                return self._not_found(req)
            found = getattr(incident, kind).get(name.lower())
            if found is None:
                return _error(404, "NotFound", f"{label} '{name}' was not found.")
            return Response(200, copy.deepcopy(found))

    def _delete_child(self, req: Request, kind: str, name: str) -> Response:
        with self._state:
            _, incident = self._incident_at(req)
            if incident is None:
                return self._not_found(req)
            return Response(200 if getattr(incident, kind).pop(name.lower(), None) else 204)

    def _put_child(self, req: Request, body: dict, kind: str, name: str, type_: str, values: dict, *,
                   track_author: bool = False) -> Response:
        """Create or replace a relation or task: ResourceWithEtag, so a stale ``etag`` in the body is a 409."""
        with self._state:
            _, incident = self._incident_at(req)
            if incident is None:
                return self._not_found(req)
            children = getattr(incident, kind)
            existing = children.get(name.lower())
            if existing and "etag" in body and body["etag"] != existing["etag"]:
                return _error(409, "Conflict", f"New version of resource '{name}' exists. Data was not saved")
            now = _now()
            props = {**values, "createdTimeUtc": existing["properties"]["createdTimeUtc"] if existing else now,
                     "lastModifiedTimeUtc": now}
            if track_author:
                props["createdBy"] = existing["properties"]["createdBy"] if existing else dict(APP_AUTHOR)
                props["lastModifiedBy"] = dict(APP_AUTHOR)
            children[name.lower()] = {"id": f"{incident.resource['id']}/{kind}/{name}", "name": name,
                                      "etag": _etag(), "type": type_, "properties": props}
            return Response(200 if existing else 201, copy.deepcopy(children[name.lower()]))
