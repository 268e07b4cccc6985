"""Trigger payload normalisation: every Sentinel trigger body becomes one ``Case``.

Logic Apps forward ``@triggerBody()`` unchanged, so an action may receive
- the incident trigger body (envelope with ``object`` = the incident resource),
- the alert trigger body (flat PascalCase, ``Entities`` as a list or a JSON string),
- the entity trigger body (``Entity`` + ``IncidentArmID``), or
- a manual run: ``{"incidentArmId": "..."}`` (entities are then read through ARM).
Keys are matched case-insensitively and unknown fields are ignored. Anything unusable is a
400 that names what is wrong. An explicit ``incidentArmId`` (any casing) at the top level
ties an alert or entity run to its incident, e.g. after the Logic App's "Alert - Get incident".

Shapes seen in the wild (issue #15, item 10):
- an entity without ``kind`` (the entity trigger's path, e.g. ``/entity/IP``, implies the type): the type
  comes from the envelope's ``EntityType``, else from the entity's properties (``KIND_BY_PROPERTY``);
- an IPv4-mapped IPv6 address (``::ffff:203.0.113.10``) is its IPv4 everywhere;
- an entity that cannot be used (no address, an address that does not parse) is kept as a ``SkippedEntity``
  with its reason, so every action can show it as a skipped row instead of dropping it;
- alerts carry ``Severity``; ``AlertSeverity`` (the SecurityAlert table's column) is the fallback.

Cheap CPU exhaustion (issue #14, item 7): every list and object is measured (``len``, O(1)) before it is
walked; past ``10 x max_entities`` items or keys the body is a 413, so a 4 MiB body of 1.9 M integers
costs a length check, not a walk.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from core.errors import BadRequest, PayloadTooLarge
from core.indicators import (
    DomainEntity,
    FileGroups,
    FileHashEntity,
    UrlEntity,
    hashes_of,
    parse_domain,
    parse_url,
)

# One ARM name in the id: nothing that would change the URL built from it (/ ? # %, and "." or ".."
# which URL normalisation drops), nothing no ARM name holds (\ and control characters, which Table
# Storage keys cannot hold either), and a bounded length.
_ARM_NAME = r"(?!\.\.?(?:/|$))[^/?#%\\\x00-\x1f\x7f-\x9f]{1,256}"
INCIDENT_ID_RE = re.compile(
    rf"^/subscriptions/(?P<sub>{_ARM_NAME})/resourceGroups/(?P<rg>{_ARM_NAME})/providers/"
    rf"Microsoft\.OperationalInsights/workspaces/(?P<ws>{_ARM_NAME})/providers/Microsoft\.SecurityInsights/"
    rf"Incidents/(?P<name>{_ARM_NAME})$",
    re.IGNORECASE,
)
ENTITY_ID_RE = re.compile(
    r"^/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)/providers/Microsoft\.OperationalInsights"
    r"/workspaces/(?P<ws>[^/]+)/",
    re.IGNORECASE,
)
SEVERITIES = ("High", "Medium", "Low", "Informational")
# Lists only the incident trigger carries inside the incident's properties (the REST resource serves them as
# sub-resources): never sent back in a PUT.
_TRIGGER_ONLY = frozenset({"relatedentities", "alerts", "comments", "bookmarks"})


# -- case-insensitive access -----------------------------------------------------------------
def ci_get(obj: Any, *names: str, default: Any = None) -> Any:
    """The value of the first of ``names`` present in ``obj``, matching keys case-insensitively."""
    if not isinstance(obj, Mapping):
        return default
    lowered: dict[str, Any] | None = None
    for name in names:
        value = obj.get(name)  # the spelling asked for is the common case: no walk over the keys
        if value is None:
            if lowered is None:
                lowered = {str(k).lower(): v for k, v in obj.items()}
            value = lowered.get(name.lower())
        if value is not None:
            return value
    return default


def ci_path(obj: Any, *path: str, default: Any = None) -> Any:
    """``ci_get`` along a path of keys: ``ci_path(body, "object", "properties", "title")``."""
    for key in path:
        obj = ci_get(obj, key)
        if obj is None:
            return default
    return obj


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, (dict, list)):
        return None
    text = str(value).strip()
    return text or None


# -- entities --------------------------------------------------------------------------------
@dataclass(frozen=True)
class IpEntity:
    address: str  # normalised (compressed) form

    @property
    def ip(self) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
        return ipaddress.ip_address(self.address)


@dataclass(frozen=True)
class HostEntity:
    host_name: str
    dns_domain: str | None = None
    mde_device_id: str | None = None
    aad_device_id: str | None = None

    @property
    def fqdn(self) -> str:
        if self.dns_domain and "." not in self.host_name:
            return f"{self.host_name}.{self.dns_domain}".lower()
        return self.host_name.lower()


@dataclass(frozen=True)
class AccountEntity:
    name: str | None
    upn_suffix: str | None = None
    aad_user_id: str | None = None
    display_name: str | None = None

    @property
    def upn(self) -> str | None:
        if self.name and "@" in self.name:
            return self.name.lower()
        if self.name and self.upn_suffix:
            return f"{self.name}@{self.upn_suffix}".lower()
        return None

    @property
    def key(self) -> str:
        return (self.aad_user_id or self.upn or self.name or "").lower()


@dataclass(frozen=True)
class OtherEntity:
    kind: str
    label: str


@dataclass(frozen=True)
class SkippedEntity:
    """An entity no action can use, with the reason: shown as a skipped row, never dropped silently."""

    kind: str  # lower-case entity kind: "ip", "host", ...
    value: str  # as received (clipped to 100 characters); "" when it was empty or missing
    reason: str


@dataclass(frozen=True)
class Workspace:
    subscription_id: str | None
    resource_group: str | None
    name: str | None
    customer_id: str | None = None  # the Log Analytics workspace GUID


@dataclass(frozen=True)
class Case:
    """What every action consumes, whatever trigger started it."""

    source: str  # incident | alert | entity | manual
    incident_id: str | None  # full ARM id, as received
    workspace: Workspace
    incident_name: str | None = None
    number: int | None = None
    title: str | None = None
    severity: str | None = None
    status: str | None = None
    url: str | None = None
    etag: str | None = None
    provider_name: str | None = None
    event_type: str | None = None
    alert_id: str | None = None
    ips: tuple[IpEntity, ...] = ()
    hosts: tuple[HostEntity, ...] = ()
    accounts: tuple[AccountEntity, ...] = ()
    others: tuple[OtherEntity, ...] = ()  # every entity that is not an IP, host or account, by label
    # Indicators (core/indicators.py): parsed views of the FileHash/File, Url and DnsResolution entities, which
    # ``others`` also lists by label, as it always did.
    files: tuple[FileHashEntity, ...] = ()
    urls: tuple[UrlEntity, ...] = ()
    domains: tuple[DomainEntity, ...] = ()
    invalid_ips: tuple[str, ...] = ()  # IP values that do not parse (also in ``skipped``, with the reason)
    skipped: tuple[SkippedEntity, ...] = ()  # every entity that cannot be used, with its reason
    entities_included: bool = True  # False for a manual run: read them through ARM
    raw_properties: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def label(self) -> str:
        """How the case is named in comments and logs."""
        if self.number is not None:
            return f"incident {self.number}"
        if self.incident_name:
            return f"incident {self.incident_name}"
        if self.alert_id:
            return f"alert {self.alert_id}"
        return "entity run"

    @property
    def subject(self) -> str:
        """What a message calls the case: "incident", "alert" or "entity" (an alert run tied to its incident
        through ``incidentArmId`` acts on the incident)."""
        if self.incident_id:
            return "incident"
        return "alert" if self.source == "alert" else "entity" if self.source == "entity" else "incident"

    @property
    def resource(self) -> dict | None:
        """The incident resource as the incident trigger carried it (id, etag and properties without the
        trigger-only lists), or None. Enough to update the incident without reading it first: the PUT carries
        the trigger's etag, so a change made since the trigger fired is a 409, and the client reads again."""
        if self.source != "incident" or not self.etag or not self.incident_id:
            return None
        properties = {k: v for k, v in self.raw_properties.items() if str(k).lower() not in _TRIGGER_ONLY}
        return {"id": self.incident_id, "name": self.incident_name, "etag": self.etag, "properties": properties}

    @property
    def entity_count(self) -> int:
        return len(self.ips) + len(self.hosts) + len(self.accounts) + len(self.others) + len(self.skipped)

    @property
    def indicator_count(self) -> int:
        """IPs, files, URLs and domains: what reputation look-ups act on."""
        return len(self.ips) + len(self.files) + len(self.urls) + len(self.domains)

    def with_entities(self, entities: Iterable[Mapping[str, Any]], max_entities: int = 500) -> Case:
        """A copy whose entities are replaced by ``entities`` (e.g. read through ARM)."""
        from dataclasses import replace

        grouped = group_entities(bounded_list(entities, "the incident's entities", max_entities), max_entities)
        return replace(self, entities_included=True, **grouped)


# Entity kinds as Sentinel names them (EntityInnerKind), keyed by the spellings bodies use: ARM ``kind``
# (Ip), alert-format ``Type`` (ip), the entity trigger's path and ``EntityType`` (IP, URL, DNS, FileHash).
KIND_ALIASES = {"dns": "dnsresolution", "dnsresolution": "dnsresolution", "domain": "dnsresolution",
                "ipaddress": "ip", "filehash": "filehash", "hash": "filehash"}
# An entity without any kind: the first of these properties it carries says what it is (EntityTypes.json
# of the 2025-09-01 spec: IpEntityProperties.address, HostEntityProperties.hostName, ...).
KIND_BY_PROPERTY = (
    ("address", "ip"),
    ("hostName", "host"), ("netBiosName", "host"),
    ("accountName", "account"), ("aadUserId", "account"), ("upnSuffix", "account"),
    ("hashValue", "filehash"),
    ("url", "url"),
    ("domainName", "dnsresolution"),
    ("fileName", "file"),
)


def canonical_kind(value: Any) -> str:
    """``Ip``/``ip``/``IP`` -> "ip"; ``DNS``/``DnsResolution`` -> "dnsresolution"; "" when absent."""
    text = _text(value)
    if not text:
        return ""
    lowered = text.lower()
    return KIND_ALIASES.get(lowered, lowered)


def _kind_of(entity: Mapping[str, Any], props: Mapping[str, Any], default_kind: str = "") -> str:
    # Alert-format entities say ``Type`` ("ip"); ARM entities carry ``type`` too, but as their resource type
    # ("Microsoft.SecurityInsights/Entities"), which says nothing of the kind.
    stated = ci_get(entity, "kind")
    if stated is None and "/" not in str(ci_get(entity, "Type") or "/"):
        stated = ci_get(entity, "Type")
    kind = canonical_kind(stated) or default_kind
    if kind:
        return kind
    for name, inferred in KIND_BY_PROPERTY:
        if ci_get(props, name) is not None:
            return inferred
    return ""


def _props(entity: Mapping[str, Any]) -> Mapping[str, Any]:
    """ARM entities carry fields under ``properties``; alert-format entities carry them flat."""
    props = ci_get(entity, "properties")
    return props if isinstance(props, Mapping) else entity


def parse_ip(raw: Any) -> str | None:
    """The normalised (compressed) address, or None. An IPv4-mapped IPv6 address is its IPv4: one look-up,
    one row, and a block-list entry or Defender indicator that blocks the IPv4 attacker."""
    text = _text(raw)
    if not text:
        return None
    try:
        ip = ipaddress.ip_address(text.split("%")[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return ip.compressed


_parse_ip = parse_ip  # the name other modules imported before it was public


def bounded_list(value: Any, what: str, max_entities: int) -> Any:
    """``value`` if it is not a list (or tuple) longer than 10 x ``max_entities``; else a 413. A length check,
    not a walk: the guard against bodies of millions of tiny items (issue #14, item 7)."""
    if isinstance(value, (list, tuple)) and len(value) > 10 * max_entities:
        raise PayloadTooLarge(f"{what}: {len(value)} items, more than {10 * max_entities} (10 x MAX_ENTITIES); "
                              "split the run")
    return value


def bounded_map(value: Any, what: str, max_entities: int) -> Any:
    """Like ``bounded_list`` for objects: every case-insensitive look-up may walk an object's keys."""
    if isinstance(value, Mapping) and len(value) > 10 * max_entities:
        raise PayloadTooLarge(f"{what}: an object of {len(value)} keys, more than {10 * max_entities} "
                              "(10 x MAX_ENTITIES); not a Sentinel trigger body")
    return value


def group_entities(entities: Iterable[Any], max_entities: int = 500, default_kind: str = "") -> dict[str, tuple]:
    """Group raw entities (ARM or alert format) by kind, dropping duplicates, keeping order.

    ``default_kind`` is the type an envelope states for entities that carry none (``EntityType``).
    """
    entities = bounded_list(entities, "entities", max_entities)
    if not isinstance(entities, list):
        entities = list(entities)
    ips: dict[str, IpEntity] = {}
    files = FileGroups()
    urls: dict[str, UrlEntity] = {}
    domains: dict[str, DomainEntity] = {}
    by_ref = _index(entities)
    invalid: dict[str, None] = {}
    skipped: dict[tuple[str, str, str], SkippedEntity] = {}
    hosts: dict[str, HostEntity] = {}
    accounts: dict[str, AccountEntity] = {}
    others: dict[tuple[str, str], OtherEntity] = {}
    count = 0

    def skip(kind: str, raw: Any, reason: str) -> None:
        value = "" if raw is None or isinstance(raw, (dict, list)) else str(raw)[:100]
        skipped.setdefault((kind, value, reason), SkippedEntity(kind, value, reason))

    for entity in entities:
        if not isinstance(entity, Mapping) or _only_ref(entity):
            continue  # alert-format "$ref" placeholders and junk are not entities
        count += 1
        if count > max_entities:
            raise PayloadTooLarge(f"more than {max_entities} entities in one call; split the run")
        bounded_map(entity, "an entity", max_entities)
        props = bounded_map(_props(entity), "an entity's properties", max_entities)
        kind = _kind_of(entity, props, default_kind)
        if kind == "ip":
            raw = ci_get(props, "address")
            address = parse_ip(raw)
            if address:
                ips.setdefault(address, IpEntity(address))
            elif _text(raw):
                invalid.setdefault(str(raw)[:100], None)
                skip("ip", raw, "not an IP address")
            else:
                skip("ip", raw, "IP entity without an address")
        elif kind == "host":
            extra = bounded_map(ci_get(props, "additionalData") or {}, "additionalData", max_entities)
            name = (_text(ci_get(props, "hostName")) or _text(ci_get(extra, "FQDN"))
                    or _text(ci_get(props, "netBiosName")))
            if not name:
                skip("host", None, "host entity without a host name")
                continue
            host = HostEntity(
                host_name=name,
                dns_domain=_text(ci_get(props, "dnsDomain")),
                mde_device_id=_text(ci_get(extra, "MdatpDeviceId")) or _text(ci_get(props, "MdatpDeviceId")),
                aad_device_id=_text(ci_get(extra, "AadDeviceId")) or _text(ci_get(props, "AzureID")),
            )
            hosts.setdefault((host.mde_device_id or host.fqdn).lower(), host)
        elif kind == "account":
            account = AccountEntity(
                name=_text(ci_get(props, "accountName", "Name")),
                upn_suffix=_text(ci_get(props, "upnSuffix")),
                aad_user_id=_text(ci_get(props, "aadUserId")),
                display_name=_text(ci_get(props, "displayName")),
            )
            if account.key:
                accounts.setdefault(account.key, account)
            else:
                skip("account", None, "account entity without a name or object id")
        elif kind:
            label = _text(ci_get(props, "friendlyName")) or _text(ci_get(entity, "name")) or kind
            others.setdefault((kind, label), OtherEntity(kind, label))
            _indicator(kind, props, by_ref, files, urls, domains, skip)
        else:
            skip("unknown", ci_get(props, "friendlyName"), "entity without a kind, and none of the known "
                                                          "properties (address, hostName, accountName, ...)")
    return {
        "ips": tuple(ips.values()),
        "files": files.result(),
        "urls": tuple(urls.values()),
        "domains": tuple(domains.values()),
        "invalid_ips": tuple(invalid),
        "skipped": tuple(skipped.values()),
        "hosts": tuple(hosts.values()),
        "accounts": tuple(accounts.values()),
        "others": tuple(others.values()),
    }


def _only_ref(entity: Mapping[str, Any]) -> bool:
    """An alert-format ``{"$ref": "3"}``: a pointer to an entity listed elsewhere in the same list."""
    return len(entity) == 1 and "$ref" in entity


def _index(entities: list) -> dict[str, Mapping[str, Any]]:
    """Entities by their alert-format ``$id`` and their ARM ``id`` / ``name`` (lower-case), for references."""
    index: dict[str, Mapping[str, Any]] = {}
    for entity in entities:
        if isinstance(entity, Mapping):
            for key in (ci_get(entity, "$id"), ci_get(entity, "id"), ci_get(entity, "name")):
                if isinstance(key, (str, int)) and not isinstance(key, bool):
                    index.setdefault(str(key).lower(), entity)
    return index


def _indicator(kind: str, props: Mapping[str, Any], by_ref: Mapping[str, Mapping[str, Any]], files: FileGroups,
               urls: dict[str, UrlEntity], domains: dict[str, DomainEntity], skip) -> None:
    """Files, URLs and domains (core/indicators.py); anything unusable is skipped with its reason."""
    if kind == "filehash":
        hashes, bad = hashes_of([(_text(ci_get(props, "algorithm", "Algorithm")),
                                  _text(ci_get(props, "hashValue", "Value")))])
        files.add(hashes)
        for value, reason in bad:
            skip("filehash", value, reason)
    elif kind == "file":
        pairs = []
        refs = ci_get(props, "fileHashEntityIds", "FileHashes") or []
        for ref in refs[:50] if isinstance(refs, list) else ():
            target = by_ref.get(str(ci_get(ref, "$ref") if isinstance(ref, Mapping) else ref).lower()) \
                if not (isinstance(ref, Mapping) and ci_get(ref, "Value")) else ref
            if isinstance(target, Mapping):
                target_props = _props(target)
                pairs.append((_text(ci_get(target_props, "algorithm", "Algorithm")),
                              _text(ci_get(target_props, "hashValue", "Value"))))
        hashes, bad = hashes_of(pairs)
        files.add(hashes, _text(ci_get(props, "fileName", "Name")))
        for value, reason in bad:
            skip("file", value, reason)
    elif kind == "url":
        raw = _text(ci_get(props, "url"))
        parsed = parse_url(raw)
        if isinstance(parsed, str):
            skip("url", raw, parsed)
        else:
            urls.setdefault(parsed.url, parsed)
    elif kind == "dnsresolution":
        raw = _text(ci_get(props, "domainName"))
        parsed = parse_domain(raw)
        if isinstance(parsed, str):
            skip("dnsresolution", raw, parsed)
        else:
            domains.setdefault(parsed.domain, parsed)


# -- the three triggers ----------------------------------------------------------------------
def parse_incident_id(value: Any, field_name: str) -> tuple[str, Workspace, str]:
    text = _text(value)
    match = INCIDENT_ID_RE.match(text or "")
    if not match:
        raise BadRequest(
            f"{field_name} is not a Sentinel incident ARM id "
            "(/subscriptions/…/workspaces/…/providers/Microsoft.SecurityInsights/Incidents/<id>)"
        )
    ws = Workspace(match["sub"], match["rg"], match["ws"])
    return text, ws, match["name"]


def _severity(value: Any) -> str | None:
    text = _text(value)
    if text is None:
        return None
    for severity in SEVERITIES:
        if severity.lower() == text.lower():
            return severity
    raise BadRequest(f"severity {text[:40]!r} is not one of {', '.join(SEVERITIES)}")


def _int(value: Any) -> int | None:
    try:
        return int(value) if value is not None and not isinstance(value, bool) else None
    except (TypeError, ValueError, OverflowError):  # OverflowError: JSON's Infinity
        return None


def _override_id(body: Mapping[str, Any]) -> Any:
    return ci_get(body, "incidentArmId", "incidentId")


def _from_incident(body: Mapping[str, Any], max_entities: int) -> Case:
    obj = bounded_map(ci_get(body, "object"), "object", max_entities)
    if not isinstance(obj, Mapping):
        raise BadRequest("incident trigger body: 'object' must be the incident resource")
    incident_id, ws, name = parse_incident_id(ci_get(obj, "id"), "object.id")
    props = bounded_map(ci_get(obj, "properties"), "object.properties", max_entities)
    if not isinstance(props, Mapping):
        raise BadRequest("incident trigger body: 'object.properties' is missing")
    info = bounded_map(ci_get(body, "workspaceInfo") or {}, "workspaceInfo", max_entities)
    ws = Workspace(
        ws.subscription_id or _text(ci_get(info, "SubscriptionId")),
        ws.resource_group or _text(ci_get(info, "ResourceGroupName")),
        ws.name or _text(ci_get(info, "WorkspaceName")),
        _text(ci_get(body, "workspaceId")),
    )
    entities = bounded_list(ci_get(props, "relatedEntities"), "relatedEntities", max_entities)
    if entities is not None and not isinstance(entities, list):
        raise BadRequest("incident trigger body: 'relatedEntities' must be a list")
    return Case(
        source="incident",
        incident_id=incident_id,
        workspace=ws,
        incident_name=_text(ci_get(obj, "name")) or name,
        number=_int(ci_get(props, "incidentNumber")),
        title=_text(ci_get(props, "title")),
        severity=_severity(ci_get(props, "severity")),
        status=_text(ci_get(props, "status")),
        url=_text(ci_get(props, "incidentUrl")),
        etag=_text(ci_get(obj, "etag")),
        provider_name=_text(ci_get(props, "providerName")),
        event_type=_text(ci_get(body, "objectEventType")),
        entities_included=entities is not None,
        raw_properties=props,
        **group_entities(entities or (), max_entities),
    )


def _alert_entities(raw: Any, max_entities: int) -> list:
    raw = bounded_list(raw, "Entities", max_entities)
    if raw is None:
        return []
    if isinstance(raw, str):
        try:
            raw = json.loads(raw) if raw.strip() else []
        except (ValueError, RecursionError):
            raise BadRequest("alert trigger body: 'Entities' is a string but not valid JSON (or nested too deeply)"
                             ) from None
    if not isinstance(raw, list):
        raise BadRequest("alert trigger body: 'Entities' must be a list (or a JSON string of one)")
    return bounded_list(raw, "Entities", max_entities)


def _from_alert(body: Mapping[str, Any], max_entities: int) -> Case:
    override = _override_id(body)
    incident_id, name = None, None
    ws = Workspace(
        _text(ci_get(body, "WorkspaceSubscriptionId")),
        _text(ci_get(body, "WorkspaceResourceGroup")),
        None,
        _text(ci_get(body, "WorkspaceId")),
    )
    if override is not None:
        incident_id, id_ws, name = parse_incident_id(override, "incidentArmId")
        ws = Workspace(id_ws.subscription_id, id_ws.resource_group, id_ws.name, ws.customer_id)
    return Case(
        source="alert",
        incident_id=incident_id,
        incident_name=name,
        workspace=ws,
        title=_text(ci_get(body, "AlertDisplayName")),
        # The alert trigger says Severity; AlertSeverity is the SecurityAlert table's column (re-posted rows).
        severity=_severity(ci_get(body, "Severity", "AlertSeverity")),
        status=_text(ci_get(body, "Status")),
        alert_id=_text(ci_get(body, "SystemAlertId")),
        provider_name=_text(ci_get(body, "ProductName")),
        **group_entities(_alert_entities(ci_get(body, "Entities"), max_entities), max_entities),
    )


def _from_entity(body: Mapping[str, Any], max_entities: int) -> Case:
    entity = bounded_map(ci_get(body, "Entity"), "Entity", max_entities)
    if not isinstance(entity, Mapping):
        raise BadRequest("entity trigger body: 'Entity' must be an object")
    raw_id = ci_get(body, "IncidentArmID") or _override_id(body)
    incident_id, name = None, None
    info = bounded_map(ci_get(body, "WorkspaceInfo"), "WorkspaceInfo", max_entities)
    if raw_id is not None:
        incident_id, ws, name = parse_incident_id(raw_id, "IncidentArmID")
    elif match := ENTITY_ID_RE.match(_text(ci_get(entity, "id")) or ""):
        ws = Workspace(match["sub"], match["rg"], match["ws"])
    elif isinstance(info, Mapping):
        ws = Workspace(_text(ci_get(info, "SubscriptionId")), _text(ci_get(info, "ResourceGroupName")),
                       _text(ci_get(info, "WorkspaceName")))
    else:
        ws = Workspace(None, None, None)
    ws = Workspace(ws.subscription_id, ws.resource_group, ws.name, _text(ci_get(body, "WorkspaceId")))
    # The entity trigger's path (/entity/IP) implies the type; the envelope may state it as EntityType.
    return Case(source="entity", incident_id=incident_id, incident_name=name, workspace=ws,
                **group_entities([entity], max_entities, canonical_kind(ci_get(body, "EntityType"))))


def _from_manual(body: Mapping[str, Any]) -> Case:
    incident_id, ws, name = parse_incident_id(_override_id(body), "incidentArmId")
    return Case(source="manual", incident_id=incident_id, incident_name=name, workspace=ws,
                entities_included=False)


def normalise(body: Any, *, max_entities: int = 500) -> Case:
    """Turn any supported trigger body into a Case, or raise BadRequest saying why not."""
    if not isinstance(body, Mapping):
        raise BadRequest("the request body must be a JSON object (the Sentinel trigger body)")
    bounded_map(body, "the request body", max_entities)
    if ci_get(body, "object") is not None or ci_get(body, "objectSchemaType") is not None:
        return _from_incident(body, max_entities)
    if ci_get(body, "SystemAlertId") is not None or ci_get(body, "Entities") is not None:
        return _from_alert(body, max_entities)
    if ci_get(body, "Entity") is not None:
        return _from_entity(body, max_entities)
    if _override_id(body) is not None:
        return _from_manual(body)
    raise BadRequest(
        "unrecognised payload: expected a Sentinel incident trigger body ('object'), an alert trigger body "
        "('SystemAlertId'/'Entities'), an entity trigger body ('Entity'), or {'incidentArmId': ...}"
    )
