"""The HTTP actions as a Logic Apps custom connector definition, generated from one source.

Why OpenAPI 2.0 (Swagger) and not 3.0: custom connectors for Logic Apps, Power Automate and
Power Apps import OpenAPI 2.0 definitions only ("OpenAPI definitions that are in OpenAPI 3.0
format are not supported", learn.microsoft.com, "Create a custom connector from an OpenAPI
definition"), smaller than 1 MB, and use the first security definition when there are several.
So the document is Swagger 2.0 with the connector extensions those designers read
(``x-ms-summary``, ``x-ms-visibility``, ``x-nullable``); schemathesis fuzzes the local host from
the very same file (tests/reliability/test_fuzz.py).

Routes, methods and auth levels are read from the FunctionApp (``function_app.app``): the
decorators stay the only place that wires them. What decorators cannot say -- summaries, query
parameters, bodies, answers -- is the data below, keyed by (function name, method). An HTTP
function without an entry, or an entry without a function, stops the generator, so the document
cannot drift from the app. ``python -m localdev.openapi`` writes ``docs/openapi.json``; with
``--check`` it only reports (exit 1) whether the committed file is stale.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.api import MAX_BODY_BYTES
from core.case import INCIDENT_ID_RE, SEVERITIES

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = ROOT / "docs" / "openapi.json"
JSON = "application/json"
HTML = "text/html"
TEXT = "text/plain"
FORM = "application/x-www-form-urlencoded"
DEFAULT_HOST = "func-sentinel-playbooks.azurewebsites.net"  # replaced on import, like the function key

Schema = dict[str, Any]


# -- schema shorthand ----------------------------------------------------------------------------
def ref(name: str) -> Schema:
    return {"$ref": f"#/definitions/{name}"}


def string(description: str = "", *, nullable: bool = False, **extra: Any) -> Schema:
    return _typed("string", description, nullable, extra)


def integer(description: str = "", *, nullable: bool = False, **extra: Any) -> Schema:
    return _typed("integer", description, nullable, extra)


def boolean(description: str = "", **extra: Any) -> Schema:
    return _typed("boolean", description, False, extra)


def array(items: Schema, description: str = "", **extra: Any) -> Schema:
    return _typed("array", description, False, {"items": items, **extra})


def obj(properties: Mapping[str, Schema] | None = None, description: str = "", *,
        required: Sequence[str] = (), **extra: Any) -> Schema:
    """An object schema; extra properties stay allowed (the pack ignores unknown fields)."""
    schema = _typed("object", description, False, extra)
    if properties:
        schema["properties"] = dict(properties)
    if required:
        schema["required"] = list(required)
    return schema


def anything(description: str) -> Schema:
    """No type: Swagger 2.0 has no oneOf, so a field taking several JSON types says so in words."""
    return {"description": description}


def _typed(kind: str, description: str, nullable: bool, extra: Mapping[str, Any]) -> Schema:
    schema: Schema = {"type": kind}
    if description:
        schema["description"] = description
    if nullable:
        schema["x-nullable"] = True
    schema.update(extra)
    return schema


def union(*schemas: Schema, description: str, required: Sequence[str] = (), example: Any = None) -> Schema:
    """One flat object with the properties of every shape: what a Swagger 2.0 connector can show
    for "any of these bodies" (the pack tells the shapes apart itself, see core/case.py)."""
    properties: dict[str, Schema] = {}
    for schema in schemas:
        for name, prop in schema["properties"].items():
            if properties.setdefault(name, prop) != prop:
                raise ValueError(f"property {name!r} has two different schemas")
    merged = obj(properties, description, required=required)
    if example is not None:
        merged["example"] = example
    return merged


# The ARM id as core.case parses it, minus the named groups (JSON Schema patterns are ECMA 262).
# Case-sensitive here where the pack is not: the documented spelling is the one triggers send.
INCIDENT_ARM_ID_PATTERN = re.sub(r"\(\?P<\w+>", "(", INCIDENT_ID_RE.pattern)
EXAMPLE_INCIDENT_ID = ("/subscriptions/6f1c2d3e-4a5b-4c6d-8e7f-9a0b1c2d3e4f/resourceGroups/rg-sentinel-prod/providers/"
                       "Microsoft.OperationalInsights/workspaces/law-sentinel-prod/providers/"
                       "Microsoft.SecurityInsights/Incidents/0f0e0d0c-0b0a-4909-8807-060504030201")
# A compact incident trigger body: one IP, one host, one account (the fuzz test seeds it in the emulators).
EXAMPLE_TRIGGER: dict[str, Any] = {
    "objectSchemaType": "Incident",
    "objectEventType": "Create",
    "workspaceInfo": {"SubscriptionId": "6f1c2d3e-4a5b-4c6d-8e7f-9a0b1c2d3e4f",
                      "ResourceGroupName": "rg-sentinel-prod", "WorkspaceName": "law-sentinel-prod"},
    "workspaceId": "8b7a6c5d-4e3f-4a2b-9c1d-0e1f2a3b4c5d",
    "object": {
        "id": EXAMPLE_INCIDENT_ID,
        "name": EXAMPLE_INCIDENT_ID.rsplit("/", 1)[1],
        "etag": "\"0a000000-0000-0000-0000-000000000000\"",
        "type": "Microsoft.SecurityInsights/Incidents",
        "properties": {
            "title": "Sign-in from anonymizing proxy", "severity": "High", "status": "New", "incidentNumber": 4242,
            "lastModifiedTimeUtc": "2026-11-20T10:01:32Z",
            "relatedEntities": [
                {"kind": "Ip", "properties": {"address": "198.51.100.23", "friendlyName": "198.51.100.23"}},
                {"kind": "Host", "properties": {"hostName": "ws-fin-0042", "dnsDomain": "corp.contoso.com",
                                                "friendlyName": "ws-fin-0042"}},
                {"kind": "Account", "properties": {"accountName": "adele.vance", "upnSuffix": "contoso.com",
                                                   "friendlyName": "adele.vance"}},
            ],
        },
    },
}


# -- definitions ---------------------------------------------------------------------------------
def definitions() -> dict[str, Schema]:
    """Every schema the operations name, request bodies first."""
    arm_id = string("Sentinel incident ARM id (/subscriptions/…/providers/Microsoft.SecurityInsights/Incidents/"
                    "<id>); matched case-insensitively", pattern=INCIDENT_ARM_ID_PATTERN)
    severity = string("Incident severity", enum=list(SEVERITIES))
    entity_properties = obj({
        "address": string("IP entity: the address (IPv4 or IPv6)"),
        "hostName": string("Host entity: host name"),
        "dnsDomain": string("Host entity: DNS domain"),
        "netBiosName": string("Host entity: NetBIOS name"),
        "accountName": string("Account entity: account name (or a UPN)"),
        "upnSuffix": string("Account entity: UPN suffix"),
        "aadUserId": string("Account entity: Entra object id"),
        "displayName": string("Account entity: display name"),
        "friendlyName": string("Display name of any entity"),
        "additionalData": obj({"MdatpDeviceId": string("Defender for Endpoint device id"),
                               "AadDeviceId": string("Entra device id"),
                               "FQDN": string("Fully qualified host name")}),
    }, "Entity fields (ARM format); the fields of other kinds are kept but not used")
    shapes = {
        "IncidentTrigger": obj({
            "objectSchemaType": string("'Incident'"),
            "objectEventType": string("Create or Update"),
            "workspaceInfo": obj({"SubscriptionId": string(), "ResourceGroupName": string(),
                                  "WorkspaceName": string()}),
            "workspaceId": string("Log Analytics workspace id (GUID)"),
            "object": ref("IncidentResource"),
        }, "Body of the Microsoft Sentinel incident trigger, as @triggerBody() passes it"),
        "AlertTrigger": obj({
            "SystemAlertId": string("Alert id"),
            "AlertDisplayName": string("Alert title"),
            "Severity": ref("Severity"),
            "Status": string("Alert status"),
            "ProductName": string("Product that raised the alert"),
            "Entities": anything("The alert's entities (flat format, 'Type' names the kind): a list, or a JSON "
                                 "string of one"),
            "WorkspaceId": string("Log Analytics workspace id (GUID)"),
            "WorkspaceSubscriptionId": string(),
            "WorkspaceResourceGroup": string(),
        }, "Body of the Microsoft Sentinel alert trigger"),
        "EntityTrigger": obj({
            "Entity": ref("Entity"),
            "IncidentArmID": {**arm_id, "x-nullable": True},
        }, "Body of the Microsoft Sentinel entity trigger"),
        "ManualRun": obj({"incidentArmId": ref("IncidentArmId")},
                         "A manual run: the incident's ARM id; its entities are read through ARM. An alert or "
                         "entity body may carry it too, to tie the run to its incident"),
    }
    trigger = union(*shapes.values(), example=EXAMPLE_TRIGGER, description=(
        "Any Sentinel trigger body, unchanged (@triggerBody()): the incident trigger ('object'), the alert "
        "trigger ('SystemAlertId' / 'Entities'), the entity trigger ('Entity') or a manual run "
        "({'incidentArmId': …}). Property names are matched case-insensitively; unknown fields are ignored."))
    notify = obj({
        "message": string("Extra text for the message (up to 1000 characters)"),
        "notifyKey": string("Names the event: a repeated key posts nothing new (default: the incident event)"),
    })
    close = obj({
        "classification": string("How the incident is closed",
                                 enum=["TruePositive", "BenignPositive", "FalsePositive", "Undetermined"]),
        "classificationReason": string("Reason allowed for the classification (default: its first)",
                                       enum=["SuspiciousActivity", "SuspiciousButExpected", "IncorrectAlertLogic",
                                             "InaccurateData"]),
        "comment": string("Closing comment (up to 1000 characters)"),
        "closedBy": string("Who decided, shown in the incident comment"),
    })
    error = obj({"error": obj({"code": string("Machine-readable error code"),
                               "message": string("What went wrong, for the SOC engineer")},
                              required=("code", "message"))}, "The error answer of every action",
                required=("error",))
    audit_entry = obj({
        "target": string("The entity acted on"),
        "outcome": string("done, pending, already, would, unavailable, refused or failed"),
        "detail": string(),
        "ids": array(string(), "Downstream ids (machine actions, indicators)"),
    }, required=("target", "outcome"))
    machine_action = obj({
        "id": string(), "type": string(), "status": string(), "machineId": string(),
        "computerDnsName": string(nullable=True), "scope": string(nullable=True),
        "created": string(), "updated": string(nullable=True),
    }, "A Defender for Endpoint machine action", required=("id", "status"))
    nullable_text = string(nullable=True)
    return {
        "IncidentArmId": arm_id,
        "Severity": severity,
        "EntityProperties": entity_properties,
        "Entity": obj({
            "id": string("ARM id of the entity"),
            "name": string(),
            "kind": string("Ip, Host, Account, …"),
            "properties": ref("EntityProperties"),
        }, "An entity in ARM format (incident and entity triggers)"),
        "IncidentResource": obj({
            "id": ref("IncidentArmId"),
            "name": string("Incident id"),
            "etag": string(),
            "type": string(),
            "properties": obj({
                "title": string(), "severity": ref("Severity"), "status": string(),
                "incidentNumber": integer(), "incidentUrl": string(), "providerName": string(),
                "lastModifiedTimeUtc": string(),
                "relatedEntities": array(ref("Entity"), "The incident's entities"),
            }),
        }, "The incident resource inside the incident trigger body", required=("id", "properties")),
        **shapes,
        "TriggerBody": trigger,
        "NotifyRequest": union(shapes["IncidentTrigger"], shapes["AlertTrigger"], shapes["EntityTrigger"],
                               shapes["ManualRun"], notify, example=EXAMPLE_TRIGGER | {"message": "Please look"},
                               description="A Sentinel trigger body (see TriggerBody) plus the message options"),
        "CloseIncidentRequest": union(
            shapes["IncidentTrigger"], shapes["ManualRun"], close, required=("classification",),
            example={"incidentArmId": EXAMPLE_INCIDENT_ID, "classification": "FalsePositive",
                     "comment": "Expected admin activity"},
            description="The incident trigger body or a manual run, plus how to close the incident"),
        "ApprovalRequest": obj({
            "callbackUrl": string("@{listCallbackUrl()} of the HTTP webhook action; its host must be allowed "
                                  "(APPROVAL_CALLBACK_ALLOWED_HOSTS)", format="uri"),
            "incident": ref("TriggerBody"),
            "choices": array(string(pattern=r"^[A-Za-z0-9_-]{1,40}$"), "2 to 5 choices (default Block, Ignore)",
                             minItems=2, maxItems=5),
            "approvers": array(string(), "Who is asked (a subset of APPROVERS; default all)", minItems=1),
            "timeout": string("ISO 8601 duration, PT1S to P30D (default APPROVAL_TIMEOUT_MINUTES)"),
            "question": string("The question shown to the approvers (up to 500 characters)"),
            "channels": array(string(enum=["email", "teams", "slack"]), "How approvers are asked", minItems=1),
            "isolateHosts": boolean("Block also isolates the incident's machines: list them as targets"),
        }, "Subscribe call of the Logic Apps HTTP webhook action", required=("callbackUrl", "incident")),
        "AskUserRequest": obj({
            "callbackUrl": string("@{listCallbackUrl()} of the HTTP webhook action; its host must be allowed "
                                  "(APPROVAL_CALLBACK_ALLOWED_HOSTS)", format="uri"),
            "incident": ref("TriggerBody"),
            "timeout": string("ISO 8601 duration, PT1S to P30D (default ASK_USER_TIMEOUT_MINUTES)"),
        }, "Subscribe call of the Logic Apps HTTP webhook action", required=("callbackUrl", "incident")),
        "AskUserCancel": obj({
            "callbackUrl": string("The callback URL the question was created with"),
            "questionId": string("Or the question id"),
        }, "Unsubscribe call of the HTTP webhook action (the run was cancelled or timed out)"),
        "ApprovalCancel": obj({
            "callbackUrl": string("The callback URL the approval was created with"),
            "approvalId": string("Or the approval id"),
        }, "Unsubscribe call of the HTTP webhook action (the run was cancelled or timed out)"),
        "ServiceNowPush": obj({
            "sys_id": string("The ticket's sys_id", pattern="^[0-9a-f]{32}$"),
            "sys_mod_count": anything("The ticket's update count (a number, or its digits as a string)"),
        }, "What the ServiceNow business rule pushes", required=("sys_id",)),
        "Error": error,
        "Health": obj({"status": string(enum=["ok", "degraded"])}, required=("status",)),
        "HealthDetails": obj({
            "status": string(enum=["ok", "degraded"]),
            "features": obj(description="Per feature: ready, missing, invalid, warnings"),
            "flags": obj(description="Values of DRY_RUN and the other flags an operator must see"),
            "problems": array(string()),
            "settings": obj(description="State of each setting: set, default, missing or invalid (never a value)"),
            "stateStore": string("'ok', or why the state store cannot be reached"),
        }, required=("status", "features", "settings", "stateStore")),
        "EnrichmentSummary": obj({
            "incident": nullable_text, "case": string("How the run names the case"),
            "complete": boolean("False while lookups wait for VirusTotal's quota"),
            "worstVerdict": string("malicious, suspicious, harmless or unknown", nullable=True),
            "maliciousCount": integer(),
            "indicators": array(obj({"kind": string(enum=["ip", "file", "url", "domain"]), "value": string(),
                                     "verdict": string(), "malicious": integer(), "suspicious": integer(),
                                     "cached": boolean(), "link": string(nullable=True)},
                                    required=("kind", "value", "verdict")), "Every verdict, all kinds"),
            "ips": array(obj({"ip": string(), "verdict": string(), "malicious": integer(),
                              "suspicious": integer(), "cached": boolean(), "link": string(nullable=True)},
                             required=("ip", "verdict")), "The IP verdicts (as before other kinds existed)"),
            "skipped": array(obj({"kind": string(), "value": string(), "reason": string(), "ip": string()})),
            "invalid": array(string()), "deferred": array(string()), "comments": array(string()),
            "commentSkipped": nullable_text, "label": nullable_text, "virustotalCalls": integer(),
            "tasks": array(obj({"taskId": string(), "title": string(), "result": string()})),
            "notes": array(string(), "Audit lines of the run (a severity raised)"),
            "note": nullable_text,
        }, required=("case", "complete", "ips", "comments")),
        "NotifySummary": obj({
            "incident": nullable_text, "alert": nullable_text, "case": string(),
            "channels": obj(description="Channel -> sent (Slack posted it), accepted (Teams started its flow: "
                                        "202 says no more), already-sent / already-accepted, unconfirmed (the "
                                        "answer was lost: not sent again), in-progress or not-configured",
                            additionalProperties=string()),
            "ticket": nullable_text,
        }, required=("case", "channels")),
        "ApprovalSummary": obj({
            "approvalId": string(), "incident": nullable_text,
            "state": string(enum=["pending", "decided", "timedout", "cancelled"]),
            "decision": nullable_text, "decidedBy": nullable_text, "decidedAt": nullable_text,
            "expiresAt": string(), "choices": array(string()), "approvers": array(string()),
            "callback": string("State of the callback to the Logic App"),
            "asked": obj(description="Channel -> how the approvers were asked", additionalProperties=string()),
        }, required=("approvalId", "state", "expiresAt")),
        "AskUserSummary": obj({
            "questionId": string(), "incident": nullable_text,
            "state": string(enum=["pending", "decided", "timedout", "cancelled"]),
            "answer": string("Yes, No or TimedOut once decided", nullable=True), "expiresAt": string(),
            "asked": array(string(), "The users asked (UPN or object id)"),
            "skipped": array(obj({"account": string(), "reason": string()}), "Accounts not asked, with the reason"),
            "dryRun": boolean(), "callback": string("State of the callback to the Logic App"),
        }, required=("questionId", "state", "expiresAt")),
        "CloseSummary": obj({
            "incident": string(), "case": string(), "status": string(), "classification": string(),
            "classificationReason": nullable_text, "alreadyClosed": boolean(), "comment": string(),
            "ticket": obj({"result": string("synced, no-ticket or not-configured"), "number": nullable_text,
                           "state": nullable_text}),
        }, required=("incident", "status", "classification")),
        "AuditEntry": audit_entry,
        "MachineAction": machine_action,
        "ResponseSummary": obj({
            "action": string(), "case": string(), "incident": nullable_text, "dryRun": boolean(),
            "results": array(ref("AuditEntry")),
            "counts": obj(description="Outcome -> number of targets", additionalProperties=integer()),
            "auditComment": nullable_text, "commentSkipped": nullable_text,
            "isolationType": nullable_text, "operation": string("Poll /response/mde/actions/{operation}",
                                                                nullable=True),
            "pendingActions": array(ref("MachineAction")), "expiresAt": nullable_text,
            "note": string("Why the call did less than asked (e.g. the error its retry follows)"),
            "tasks": array(ref("TaskResult"), "Analyst tasks added to the incident (isolation)"),
        }, "What a response action did to each target", required=("action", "dryRun", "results", "counts")),
        "TaskResult": obj({"taskId": string(), "title": string(),
                           "result": string("created, updated, unchanged or kept-completed")},
                          required=("taskId", "title", "result")),
        "ActionStatus": obj({
            "status": string("InProgress, Succeeded, Failed, …"), "operation": string(),
            "actions": array(obj({"id": string(), "status": string()}, required=("id", "status"))),
            "auditComment": nullable_text,
            "tasks": array(ref("TaskResult"), "The analyst task a succeeded isolation adds"),
        }, required=("status", "operation", "actions")),
        "SyncSummary": obj({
            "created": boolean("True when this call created the ticket"), "incident": string(),
            "ticket": obj({"number": string(), "sysId": string(), "url": string(), "state": string()}),
            "changed": boolean(), "sentinel": obj(), "servicenow": obj(), "conflicts": array(obj()),
        }, required=("incident", "ticket", "changed")),
        "InboundSummary": obj({
            "incident": string(), "ticket": obj({"number": string(), "sysId": string(), "url": string()}),
            "changed": boolean(), "ignored": string("Why the push changed nothing"),
        }, required=("incident", "ticket", "changed")),
        "SyncStatus": obj({"poll": obj({
            "runs": integer("Poll runs this instance finished"),
            "finishedAt": {"type": "number", "description": "When the last one finished (epoch seconds; 0: none yet)"},
            "last": obj(description="That run's summary"),
        }, required=("runs",))}, required=("poll",)),
    }


# -- operations ----------------------------------------------------------------------------------
STATUS_TEXT: dict[int, str] = {
    200: "Done: the summary later steps branch on",
    201: "Created",
    202: "Accepted: poll the Location URL after Retry-After seconds",
    302: "Not signed in: redirected to the sign-in (/api/auth/login, or /.auth/login/aad with SIGN_IN_MODE=easyauth) "
         "and back",
    400: "The payload is malformed or unusable; the message names the problem (do not retry)",
    401: "Missing or wrong function key",
    403: "The function's identity lacks a role on a downstream API (the message names it)",
    404: "The incident (or the resource named in the path) does not exist",
    409: "A final conflict: the guardrails refused every target, or a decision was already made (review, do not retry)",
    413: f"The body is over {MAX_BODY_BYTES // 2**20} MiB, or it names more than MAX_ENTITIES entities",
    429: "A downstream API throttled, or another run holds the target: retry after Retry-After",
    500: "A setting is missing, malformed or rejected (ConfigurationError names it)",
    502: "A downstream API failed or timed out: retry after Retry-After",
    503: "The state store cannot be reached; nothing was done: retry after Retry-After",
}
RETRY_STATUSES = (429, 502, 503)
TRIGGER_ERRORS = (400, 401, 403, 404, 409, 413, 429, 500, 502, 503)
QUERY: dict[str, Schema] = {
    "dryRun": {"name": "dryRun", "in": "query", "type": "boolean", "required": False, "x-ms-summary": "Dry run",
               "description": "Only report what would be done (can add safety, never lift the DRY_RUN setting)"},
    "isolationType": {"name": "isolationType", "in": "query", "type": "string", "enum": ["Full", "Selective"],
                      "required": False, "x-ms-summary": "Isolation type",
                      "description": "Full or Selective (default: the MDE_ISOLATION_TYPE setting)"},
    "approver": {"name": "approver", "in": "query", "type": "string", "required": False,
                 "description": "The approver a personal link was mailed to (absent on the review link)"},
    "user": {"name": "user", "in": "query", "type": "string", "required": True,
             "description": "Object id of the user the question was mailed to"},
    "expires": {"name": "expires", "in": "query", "type": "integer", "required": True,
                "description": "Expiry of the link (Unix time), covered by the signature"},
    "sig": {"name": "sig", "in": "query", "type": "string", "required": True,
            "description": "HMAC-SHA256 signature of the link"},
    "redirect": {"name": "redirect", "in": "query", "type": "string", "required": False,
                 "description": "Where to go afterwards: one of the app's own paths (/api/...), nothing else"},
    "mfa": {"name": "mfa", "in": "query", "type": "string", "enum": ["1"], "required": False,
            "description": "1: a new multi-factor sign-in (prompt=login and SIGN_IN_MFA_AUTH_CONTEXT)"},
    "code": {"name": "code", "in": "query", "type": "string", "required": False,
             "description": "The authorization code Entra ID sends back"},
    "state": {"name": "state", "in": "query", "type": "string", "required": False,
              "description": "The state of the sign-in this answer belongs to"},
    "error": {"name": "error", "in": "query", "type": "string", "required": False,
              "description": "Entra ID's error code when it did not sign the person in"},
}
HEADERS: dict[str, Schema] = {
    "X-ServiceNow-Signature": {"name": "X-ServiceNow-Signature", "in": "header", "type": "string", "required": True,
                               "description": "base64 HMAC-SHA256 of the raw body under SERVICENOW_WEBHOOK_SECRET"},
}


@dataclass(frozen=True)
class Action:
    """What the decorators do not say about one (function, method)."""

    operation_id: str
    summary: str
    description: str
    ok: Mapping[int, str]                  # success status -> definition of its body
    errors: Sequence[int] = TRIGGER_ERRORS
    body: str | None = None                # definition of the JSON body
    query: Sequence[str] = ()
    headers: Sequence[str] = ()
    produces: Sequence[str] = (JSON,)
    error_schema: str | None = "Error"     # None: errors are HTML pages, like the success answer
    form: Mapping[str, str] = field(default_factory=dict)  # form field -> description
    notes: Mapping[int, str] = field(default_factory=dict)  # status -> text, where STATUS_TEXT is not precise
    visibility: str | None = None


RESPONSE_QUERY = ("dryRun",)
ACTIONS: dict[tuple[str, str], Action] = {
    ("health", "GET"): Action(
        "Health", "Check the function app",
        "Anonymous liveness: the status only (details need a function key: health/details).",
        ok={200: "Health"}, errors=(503,), error_schema="Health", visibility="advanced",
        notes={503: "Degraded: a shared setting is malformed or the state store is unreachable"}),
    ("health_details", "GET"): Action(
        "HealthDetails", "Readiness of each feature",
        "Readiness per feature, flags such as DRY_RUN, and the state of each setting, never a value.",
        ok={200: "HealthDetails"}, errors=(401, 503), error_schema="HealthDetails", visibility="advanced",
        notes={503: "Degraded: a shared setting is malformed or the state store is unreachable"}),
    ("reputation", "POST"): Action(
        "EnrichReputation", "Enrich indicators with VirusTotal",
        "VirusTotal verdict for every IP, file hash, URL and domain entity; one comment per run with a section per "
        "kind (the same comment on retries, a new one for new information).",
        ok={200: "EnrichmentSummary"}, body="TriggerBody"),
    ("ip_reputation", "POST"): Action(
        "EnrichIpReputation", "Enrich indicators with VirusTotal (former route)",
        "The route's first name, kept as an alias of enrichment/reputation: the same action and answer.",
        ok={200: "EnrichmentSummary"}, body="TriggerBody", visibility="advanced"),
    ("orchestration_notify", "POST"): Action(
        "NotifyIncident", "Post the incident to Teams and Slack",
        "An Adaptive Card to Teams and Block Kit to Slack, side by side, once per incident, alert or entity event "
        "and channel.",
        ok={200: "NotifySummary"}, body="NotifyRequest"),
    ("orchestration_approvals", "POST"): Action(
        "StartApproval", "Ask approvers (HTTP webhook subscribe)",
        "Stores the approval, sends each approver signed links and calls callbackUrl back with the decision.",
        ok={200: "ApprovalSummary", 201: "ApprovalSummary"}, body="ApprovalRequest",
        notes={200: "The approval already existed (a retried subscribe)", 201: "The approval was created"}),
    ("orchestration_approvals", "DELETE"): Action(
        "CancelApproval", "Cancel an approval (HTTP webhook unsubscribe)",
        "The Logic App run was cancelled or timed out: the links stop deciding anything.",
        ok={200: "ApprovalSummary"}, body="ApprovalCancel", errors=(400, 401, 403, 404, 413, 429, 500, 502, 503),
        notes={404: "No such approval"}),
    ("orchestration_approval_link", "GET"): Action(
        "ShowApprovalLink", "Approval link: the page with the targets",
        "What an approver's link (or the channel's review link) opens: the targets and the buttons, for the "
        "signed-in approver. Not signed in: 302 to the sign-in. A GET decides and changes nothing, so mail "
        "scanners and link previews are harmless. No function key: the signature and the sign-in are the "
        "credentials.",
        ok={200: "HtmlPage"}, produces=(HTML,), error_schema=None, query=("approver", "expires", "sig"),
        errors=(302, 401, 403, 404, 409, 410, 429, 500, 502, 503), visibility="internal",
        notes={302: "Not signed in: to the sign-in and back", 401: "The sign-in cannot be read",
               403: "The link is altered or not for this approval, or the signed-in person may not decide it",
               404: "No such approval", 409: "Already decided", 410: "The approval expired"}),
    ("orchestration_approval_link", "POST"): Action(
        "DecideApproval", "Approval link: record the decision",
        "The confirmation page's form: the first valid decision wins and the playbook is called back.",
        ok={200: "HtmlPage"}, produces=(HTML,), error_schema=None, query=("approver", "expires", "sig"),
        form={"confirm": "The decision being confirmed (a personal link: must equal the link's choice)",
              "csrf": "The page's anti-CSRF token (bound to the signed-in person and session)"},
        errors=(400, 401, 403, 404, 409, 410, 429, 500, 502, 503), visibility="internal",
        notes={400: "Not confirmed: the form's decision is not the link's", 401: "Not signed in",
               403: "The link is altered or not for this approval, the signed-in person may not decide it, or "
               "the form did not come from the page (token, Origin)", 404: "No such approval",
               409: "Already decided", 410: "The approval expired"}),
    ("entra_ask_user", "POST"): Action(
        "AskUser", "Ask the incident's users \"Was this you?\" (HTTP webhook subscribe)",
        "Mails each account of the incident a personal link; the answer page needs that user's sign-in. No: "
        "confirmed compromised; Yes (fresh MFA): recorded; the callback carries the answer.",
        ok={200: "AskUserSummary", 201: "AskUserSummary"}, body="AskUserRequest", query=RESPONSE_QUERY,
        notes={200: "The question already existed (a retried subscribe)", 201: "The question was created",
               409: "Nobody can be asked (protected, unknown or unidentifiable accounts)"}),
    ("entra_ask_user", "DELETE"): Action(
        "CancelAskUser", "Cancel the question (HTTP webhook unsubscribe)",
        "The Logic App run was cancelled or timed out: the links stop recording answers.",
        ok={200: "AskUserSummary"}, body="AskUserCancel", errors=(400, 401, 403, 404, 413, 429, 500, 502, 503),
        notes={404: "No such question"}),
    ("entra_ask_user_answer", "GET"): Action(
        "ShowAskUser", "The user's answer page",
        "What the mailed link opens, for the signed-in user it was mailed to: the activity and two buttons. Not "
        "signed in: 302 to the sign-in. A GET records and changes nothing.",
        ok={200: "HtmlPage"}, produces=(HTML,), error_schema=None, query=("user", "expires", "sig"),
        errors=(302, 401, 403, 404, 409, 410, 429, 500, 502, 503), visibility="internal",
        notes={302: "Not signed in", 403: "The link is altered, or the signed-in person is not that user",
               404: "No such question", 409: "Already answered", 410: "The question expired"}),
    ("entra_ask_user_answer", "POST"): Action(
        "AnswerAskUser", "Record the user's answer",
        "The page's form: No counts at once; Yes needs a recent multi-factor sign-in.",
        ok={200: "HtmlPage"}, produces=(HTML,), error_schema=None, query=("user", "expires", "sig"),
        form={"answer": "Yes or No", "csrf": "The page's anti-CSRF token"},
        errors=(400, 401, 403, 404, 409, 410, 429, 500, 502, 503), visibility="internal",
        notes={400: "Neither Yes nor No", 401: "Not signed in", 403: "Not that user, the form did not come "
               "from the page, or Yes without a recent MFA sign-in", 404: "No such question",
               409: "Already answered", 410: "The question expired"}),
    ("orchestration_close_incident", "POST"): Action(
        "CloseIncident", "Close the incident and its ticket",
        "Closes the Sentinel incident (classification, reason, comment; etag-safe) and its ServiceNow ticket.",
        ok={200: "CloseSummary"}, body="CloseIncidentRequest"),
    ("mde_isolate", "POST"): Action(
        "IsolateMachines", "Isolate the incident's machines (Defender for Endpoint)",
        "Resolves Host entities to Defender machines and isolates them; 202 while Defender works.",
        ok={200: "ResponseSummary", 202: "ResponseSummary"}, body="TriggerBody",
        query=("isolationType", *RESPONSE_QUERY)),
    ("mde_release", "POST"): Action(
        "ReleaseMachines", "Release the incident's machines from isolation",
        "Releases the incident's machines; 202 while Defender works.",
        ok={200: "ResponseSummary", 202: "ResponseSummary"}, body="TriggerBody", query=RESPONSE_QUERY),
    ("mde_action_status", "GET"): Action(
        "GetMachineActionStatus", "Status of an isolation or release",
        "The Location of the asynchronous pattern: 202 while pending, 200 with the final state. Anonymous: the "
        "Location's signature (bound to the operation and its expiry) is the credential.",
        ok={200: "ActionStatus", 202: "ActionStatus"}, errors=(403, 404, 429, 500, 502, 503),
        query=("expires", "sig"), visibility="internal",
        notes={403: "The status link is altered, for another operation or expired",
               404: "No such operation or machine action"}),
    ("entra_confirm_compromised", "POST"): Action(
        "ConfirmUsersCompromised", "Confirm the incident's users compromised (Entra ID Protection)",
        "Marks the users as compromised in Identity Protection (needs Entra ID P2).",
        ok={200: "ResponseSummary"}, body="TriggerBody", query=RESPONSE_QUERY),
    ("entra_revoke_sessions", "POST"): Action(
        "RevokeUserSessions", "Revoke the incident's users' sessions",
        "Revokes the sign-in sessions (refresh tokens) of the incident's users.",
        ok={200: "ResponseSummary"}, body="TriggerBody", query=RESPONSE_QUERY),
    ("entra_disable_user", "POST"): Action(
        "DisableUsers", "Disable the incident's user accounts",
        "Disables the accounts; one already disabled is reported, not an error.",
        ok={200: "ResponseSummary"}, body="TriggerBody", query=RESPONSE_QUERY),
    ("entra_enable_user", "POST"): Action(
        "EnableUsers", "Enable the incident's user accounts (undo of disable)",
        "Enables the accounts again, with the same guardrails and audit; one already enabled is reported.",
        ok={200: "ResponseSummary"}, body="TriggerBody", query=RESPONSE_QUERY),
    ("block_ip", "POST"): Action(
        "BlockIps", "Block the incident's IP addresses",
        "Defender for Endpoint indicator (AlertAndBlock) and an entry in the firewall block list.",
        ok={200: "ResponseSummary"}, body="TriggerBody", query=RESPONSE_QUERY),
    ("unblock_ip", "POST"): Action(
        "UnblockIps", "Unblock the incident's IP addresses",
        "Removes the indicator and the block-list entry of each address.",
        ok={200: "ResponseSummary"}, body="TriggerBody", query=RESPONSE_QUERY),
    ("block_indicators", "POST"): Action(
        "BlockIndicators", "Block the incident's files, URLs and domains",
        "Defender for Endpoint indicators (FileSha256/FileSha1/FileMd5 BlockAndRemediate, Url and DomainName Block) "
        "for the values whose latest VirusTotal verdict is in BLOCK_INDICATOR_VERDICTS; never internal or protected "
        "values; a URL without userinfo, query and fragment.",
        ok={200: "ResponseSummary"}, body="TriggerBody", query=RESPONSE_QUERY),
    ("unblock_indicators", "POST"): Action(
        "UnblockIndicators", "Unblock the incident's files, URLs and domains",
        "Deletes the pack's own blocking indicators of each value (the undo of block-indicators); a block another "
        "application made is reported, not removed.",
        ok={200: "ResponseSummary"}, body="TriggerBody", query=RESPONSE_QUERY),
    ("ip_blocklist", "GET"): Action(
        "GetBlockList", "The firewall block list",
        "Blocked, unexpired IP addresses, one per line: the external dynamic list firewalls poll "
        "(with ?code=<function key>).",
        ok={200: "PlainText"}, produces=(TEXT, JSON), errors=(401, 429, 500, 502, 503), visibility="advanced"),
    ("servicenow_outbound", "POST"): Action(
        "SyncToServiceNow", "Create or update the incident's ServiceNow ticket",
        "One ticket per incident (created once), then fields and comments synced both ways.",
        ok={200: "SyncSummary"}, body="TriggerBody"),
    ("servicenow_status", "GET"): Action(
        "ServiceNowSyncStatus", "The ServiceNow poll runs of this instance",
        "How many poll runs this instance finished and the last one's summary (idle runs write nothing to state).",
        ok={200: "SyncStatus"}, errors=(401, 500), visibility="advanced"),
    ("servicenow_inbound", "POST"): Action(
        "ServiceNowPush", "ServiceNow push (business rule)",
        "A ticket changed in ServiceNow: checks the signature, then syncs that ticket's incident.",
        ok={200: "InboundSummary"}, body="ServiceNowPush", headers=("X-ServiceNow-Signature",),
        errors=(400, 401, 403, 404, 409, 413, 429, 500, 502, 503), visibility="internal",
        notes={401: "Missing or wrong function key, or the body's signature does not match",
               404: "The ticket is not linked to an incident"}),
}
# The in-app sign-in (core/signin_routes.py): browsers only, never a connector action.
SIGN_IN_ERRORS = (400, 401, 403, 404, 409, 500, 502, 503)
ACTIONS.update({
    ("sign_in_start", "GET"): Action(
        "SignIn", "Sign in (the app's own sign-in)",
        "Sends the browser to Microsoft Entra ID (OpenID Connect authorization code flow with PKCE) and back to "
        "redirect. With SIGN_IN_MODE=easyauth: to /.auth/login/aad.",
        ok={302: "HtmlPage"}, produces=(HTML,), error_schema=None, query=("redirect", "mfa"), errors=(400, 500),
        visibility="internal", notes={302: "To Entra ID (a short-lived signed flow cookie is set)",
                                      400: "redirect is not one of the app's own paths",
                                      500: "The sign-in is not configured (the page names the setting)"}),
    ("sign_in_callback", "GET"): Action(
        "SignInCallback", "Entra ID's answer to the sign-in",
        "Checks the state against the browser's flow cookie (once), redeems the code with PKCE and the function "
        "identity's client assertion, verifies the ID token and opens the session.",
        ok={302: "HtmlPage"}, produces=(HTML,), error_schema=None, query=("code", "state", "error"),
        errors=SIGN_IN_ERRORS, visibility="internal",
        notes={302: "Signed in: back to the page (session cookie set)", 401: "State, code or ID token refused",
               403: "A multi-factor sign-in was asked for and the token does not show one",
               404: "SIGN_IN_MODE=easyauth", 409: "This answer was already used"}),
    ("sign_in_callback", "POST"): Action(
        "SignInCallbackPost", "Entra ID's answer to the sign-in (form_post)",
        "The same answer posted as a form.", ok={302: "HtmlPage"}, produces=(HTML,), error_schema=None,
        form={"code": "The authorization code", "state": "The state of the sign-in"}, errors=SIGN_IN_ERRORS,
        visibility="internal", notes={401: "State, code or ID token refused", 409: "This answer was already used"}),
    ("sign_out", "GET"): Action(
        "SignOut", "Sign out of the app",
        "Clears the session cookie; back to redirect when it is one of the app's own paths.",
        ok={200: "HtmlPage", 302: "HtmlPage"}, produces=(HTML,), error_schema=None, query=("redirect",),
        errors=(500,), visibility="internal"),
})
TEXT_DEFINITIONS = {"HtmlPage": string("An HTML page for the approver"),
                    "PlainText": string("One IP address per line")}


# -- the document ----------------------------------------------------------------------------------
def http_functions(app: Any) -> list[tuple[str, str, list[str], str]]:
    """(function name, route, methods, auth level) of every HTTP function of ``app``.

    azure-functions refuses a second ``get_functions()`` on one app (it remembers the names it
    indexed), so the remembered bindings are cleared first; the call itself only reads decorators.
    """
    app.functions_bindings = {}
    found = []
    for function in app.get_functions():
        for binding in function.get_bindings():
            spec = binding.get_dict_repr()
            if spec.get("type") != "httpTrigger":
                continue
            methods = [str(getattr(m, "value", m)).upper() for m in spec.get("methods") or ()]
            level = str(getattr(spec.get("authLevel"), "value", spec.get("authLevel") or "function")).lower()
            found.append((function.get_function_name(), spec.get("route") or function.get_function_name(),
                          methods, level))
    return found


def _responses(action: Action) -> dict[str, Schema]:
    answers: dict[str, Schema] = {}
    for status in sorted({*action.ok, *action.errors}):
        name = action.ok.get(status) or action.error_schema
        answer: Schema = {"description": action.notes.get(status) or STATUS_TEXT[status],
                          "schema": ref(name) if name else ref("HtmlPage")}
        if status == 202:
            answer["headers"] = {"Location": {"type": "string", "description": "Where to poll"},
                                 "Retry-After": {"type": "integer", "description": "Seconds before polling"}}
        elif status in RETRY_STATUSES:
            answer["headers"] = {"Retry-After": {"type": "integer", "description": "Seconds before retrying"}}
        answers[str(status)] = answer
    return answers


def _operation(action: Action, route: str, anonymous: bool) -> Schema:
    parameters = [{"name": name, "in": "path", "type": "string", "required": True, "x-ms-url-encoding": "single"}
                  for name in re.findall(r"\{([^}:?]+)", route)]
    parameters += [dict(QUERY[name]) for name in action.query]
    parameters += [dict(HEADERS[name]) for name in action.headers]
    parameters += [{"name": name, "in": "formData", "type": "string", "required": True, "description": text}
                   for name, text in action.form.items()]
    if action.body:
        parameters.append({"name": "body", "in": "body", "required": True, "schema": ref(action.body),
                           "x-ms-summary": "Body"})
    operation: Schema = {"operationId": action.operation_id, "summary": action.summary,
                         "description": action.description}
    if action.form:
        operation["consumes"] = [FORM]
    if list(action.produces) != [JSON]:
        operation["produces"] = list(action.produces)
    if parameters:
        operation["parameters"] = parameters
    operation["responses"] = _responses(action)
    if anonymous:
        operation["security"] = []
    if action.visibility:
        operation["x-ms-visibility"] = action.visibility
    return operation


def build(app: Any = None, host: str = DEFAULT_HOST) -> dict[str, Any]:
    """The whole document for ``app`` (default: the pack's FunctionApp)."""
    if app is None:
        from function_app import app
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    paths: dict[str, dict[str, Schema]] = {}
    seen = set()
    for name, route, methods, level in sorted(http_functions(app), key=lambda f: f[1]):
        for method in methods:
            action = ACTIONS.get((name, method))
            if action is None:
                raise KeyError(f"HTTP function {name} ({method} {route}) is not described in localdev/openapi.py")
            seen.add((name, method))
            paths.setdefault(f"/{route}", {})[method.lower()] = _operation(action, route, level == "anonymous")
    stale = sorted(set(ACTIONS) - seen)
    if stale:
        raise KeyError(f"described in localdev/openapi.py but not in the app: {stale}")
    return {
        "swagger": "2.0",
        "info": {
            "title": "Sentinel playbook actions",
            "version": version,
            "description": "HTTP actions of the sentinel-playbooks function app, called by thin Logic App "
                           "playbooks. Answers are JSON; errors are {'error': {'code', 'message'}}; 429, 502 "
                           "and 503 carry Retry-After. Generated by localdev/openapi.py.",
        },
        "host": host,
        "basePath": "/api",
        "schemes": ["https"],
        "consumes": [JSON],
        "produces": [JSON],
        # The header first: a custom connector uses the first security definition.
        "securityDefinitions": {
            "functionKey": {"type": "apiKey", "in": "header", "name": "x-functions-key",
                            "description": "Function key (Key Vault reference in the Logic App)"},
            "functionKeyQuery": {"type": "apiKey", "in": "query", "name": "code",
                                 "description": "The same key as ?code=, for callers that cannot set a header"},
        },
        "security": [{"functionKey": []}, {"functionKeyQuery": []}],
        "paths": paths,
        "definitions": {**definitions(), **TEXT_DEFINITIONS},
    }


def render(document: Mapping[str, Any] | None = None) -> str:
    """The file's exact text: stable key order and indentation so the committed copy diffs cleanly."""
    return json.dumps(document if document is not None else build(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write docs/openapi.json (OpenAPI 2.0) from the function app.")
    parser.add_argument("--check", action="store_true", help="exit 1 if the committed file is not up to date")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = args.output.read_text() if args.output.exists() else ""
        if current != text:
            print(f"{args.output} is stale: run python -m localdev.openapi", file=sys.stderr)
            return 1
        return 0
    args.output.write_text(text)
    print(f"wrote {args.output} ({len(text.encode())} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
