"""Every setting the pack reads, in one place.

Settings come from environment variables (app settings in Azure, Key Vault references for
secrets). A malformed value is reported by name when the settings are loaded; a missing
value is reported by name by the action that needs it (``Settings.require``), so one
unconfigured integration does not take the others down.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlparse

from core.errors import ConfigurationError


class Secret(str):
    """A string that never shows its value in a repr, a log line or an f-string of a dict."""

    def __repr__(self) -> str:
        return "Secret('***')"


@dataclass(frozen=True)
class SettingSpec:
    """What a setting is: its name, default, kind and whether it is a secret."""

    name: str
    default: str | None = None
    kind: str = "str"  # str | url | int | bool | list
    secret: bool = False
    doc: str = ""


# The table every other document refers to: README's settings table is generated from it.
SPECS: tuple[SettingSpec, ...] = (
    SettingSpec("ARM_ENDPOINT", "https://management.azure.com", "url", doc="Azure Resource Manager (Sentinel API)"),
    SettingSpec("GRAPH_ENDPOINT", "https://graph.microsoft.com", "url", doc="Microsoft Graph"),
    SettingSpec("MDE_ENDPOINT", "https://api.securitycenter.microsoft.com", "url", doc="Defender for Endpoint API"),
    SettingSpec("VIRUSTOTAL_ENDPOINT", "https://www.virustotal.com", "url", doc="VirusTotal API v3"),
    SettingSpec("SERVICENOW_INSTANCE_URL", None, "url", doc="ServiceNow instance, e.g. https://contoso.service-now.com"),
    SettingSpec("VIRUSTOTAL_API_KEY", None, secret=True, doc="VirusTotal API key (Key Vault reference)"),
    SettingSpec("SERVICENOW_USERNAME", None, doc="ServiceNow integration user"),
    SettingSpec("SERVICENOW_PASSWORD", None, secret=True, doc="ServiceNow password (Key Vault reference)"),
    SettingSpec("SLACK_WEBHOOK_URL", None, secret=True, doc="Slack incoming webhook (Key Vault reference)"),
    SettingSpec("TEAMS_WEBHOOK_URL", None, secret=True, doc="Teams Workflows webhook (Key Vault reference)"),
    SettingSpec("APPROVAL_SIGNING_KEY", None, secret=True, doc="HMAC key for approval links (Key Vault reference)"),
    SettingSpec("STATE_STORAGE_CONNECTION", None, secret=True, doc="Storage connection string (Azurite locally)"),
    SettingSpec("STATE_TABLE_SERVICE_URI", None, "url", doc="Table endpoint, used with managed identity in Azure"),
    SettingSpec("STATE_QUEUE_SERVICE_URI", None, "url", doc="Queue endpoint, used with managed identity in Azure"),
    SettingSpec("STATE_TABLE_PREFIX", "", doc="Prefix for table and queue names (isolates tests and environments)"),
    SettingSpec("PROTECTED_ACCOUNTS", "", "list", doc="Accounts response actions never touch (UPNs or object ids)"),
    SettingSpec("PROTECTED_MACHINES", "", "list", doc="Machines response actions never touch (names or device ids)"),
    SettingSpec("APPROVERS", "", "list", doc="Who may decide approvals (UPNs / emails)"),
    SettingSpec("DRY_RUN", "false", "bool", doc="Report what response actions would do without doing it"),
    SettingSpec("HTTP_TIMEOUT_SECONDS", "10", "int", doc="Timeout of one outbound HTTP request"),
    SettingSpec("HTTP_MAX_RETRIES", "3", "int", doc="Retries of one outbound request on 429/5xx"),
    SettingSpec("HTTP_MAX_RETRY_AFTER_SECONDS", "10", "int",
                doc="Longest Retry-After the function waits itself; longer ones go back to the Logic App"),
    SettingSpec("VIRUSTOTAL_CACHE_TTL_SECONDS", "86400", "int", doc="How long a verdict is reused"),
    SettingSpec("VIRUSTOTAL_MALICIOUS_THRESHOLD", "2", "int", doc="Engines flagging malicious for a malicious verdict"),
    SettingSpec("VIRUSTOTAL_SUSPICIOUS_THRESHOLD", "1", "int",
                doc="Engines flagging malicious or suspicious for a suspicious verdict"),
    SettingSpec("VIRUSTOTAL_QUOTA_RETRY_SECONDS", "60", "int", doc="Delay before deferred lookups are retried"),
    SettingSpec("VIRUSTOTAL_LABEL", "true", "bool", doc="Add the label 'VirusTotal: malicious' when any IP is"),
    SettingSpec("MAX_ENTITIES", "500", "int", doc="Most entities one call accepts (larger payloads get 413)"),
    SettingSpec("APPROVAL_MAILBOX", None, doc="Mailbox (UPN) approval mail is sent from through Graph sendMail"),
    SettingSpec("APPROVAL_TIMEOUT_MINUTES", "60", "int", doc="How long an approval waits for a decision"),
    SettingSpec("APPROVAL_CALLBACK_ALLOWED_HOSTS", "*.logic.azure.com", "list",
                doc="Hosts (fnmatch patterns) approval callbacks may go to: no SSRF through callbackUrl"),
    SettingSpec("PUBLIC_BASE_URL", None, "url",
                doc="Base URL of approval links; default: the origin the playbook called (the app's host name)"),
    SettingSpec("LOCAL_MODE", "false", "bool", doc="Local stack only: allows loopback approval callbacks"),
    SettingSpec("SERVICENOW_WEBHOOK_SECRET", None, secret=True,
                doc="Shared secret of the HMAC signature on ServiceNow pushes (Key Vault reference)"),
    SettingSpec("SERVICENOW_CALLER_ID", None, doc="Caller (sys_user sys_id) of the tickets the sync creates"),
    SettingSpec("SERVICENOW_ASSIGNMENT_GROUP", None, doc="Assignment group (sys_user_group sys_id) of new tickets"),
    SettingSpec("SERVICENOW_CATEGORY", None, doc="Category of new tickets (empty: the instance's default)"),
    SettingSpec("SERVICENOW_MAPPING", "", doc="JSON overriding the sync's mapping tables (docs/servicenow.md)"),
    SettingSpec("SERVICENOW_POLL_BATCH", "100", "int", doc="Tickets per ServiceNow request when polling (page size)"),
    SettingSpec("MDE_ISOLATION_TYPE", "Full", doc="Defender for Endpoint isolation: Full or Selective"),
    SettingSpec("RESPONSE_MAX_TARGETS", "3", "int",
                doc="Blast-radius cap: most machines, users or IPs one response call may act on"),
    SettingSpec("BLOCK_IP_EXPIRY_HOURS", "72", "int",
                doc="Lifetime of an IP block (Defender indicator and block-list entry); a new block renews it"),
    SettingSpec("APPLICATIONINSIGHTS_CONNECTION_STRING", None,
                doc="Application Insights; when set, traces and logs go there (OpenTelemetry, core/telemetry.py)"),
    # -- workspace pinning, Sentinel comments, enrichment speed (issues #14.5, #15.11, #16) -----------------
    SettingSpec("SENTINEL_WORKSPACES", "", "list",
                doc="Workspace ARM ids (and/or Log Analytics workspace GUIDs) the pack may act on; others get 403. "
                    "Empty: not pinned with LOCAL_MODE, every action refused without it (core/workspace.py)"),
    SettingSpec("SENTINEL_COMMENT_RESERVE", "10", "int",
                doc="Of Sentinel's 100 comments per incident, how many the pack leaves to analysts; one summary "
                    "comment says when the pack stops commenting (core/comments.py)"),
    SettingSpec("VIRUSTOTAL_POOL_SIZE", "16", "int",
                doc="VirusTotal look-ups one run makes at a time (after a quota answer it starts no more)"),
    # -- reputation of every indicator kind, severity, analyst tasks (issue #18) --------------------------------
    SettingSpec("INTERNAL_DOMAINS", "", "list",
                doc="Domains (and their subdomains) never sent to VirusTotal, besides the tenant's verified domains"),
    SettingSpec("INTERNAL_DOMAINS_FROM_GRAPH", "true", "bool",
                doc="Treat the tenant's verified domains as internal (Graph GET /domains, Domain.Read.All)"),
    SettingSpec("VIRUSTOTAL_URL_LOOKUP", "url",
                doc="url: look up URLs without userinfo, query and fragment; domain: send only the URL's host"),
    SettingSpec("VIRUSTOTAL_DOMAINS_FROM_URLS", "false", "bool",
                doc="Also look up the host of every URL entity as a domain"),
    SettingSpec("VIRUSTOTAL_RAISE_SEVERITY", "",
                doc="Raise the incident to this severity (Low, Medium, High) when an indicator is malicious; "
                    "empty: off. Never lowers it"),
    SettingSpec("INCIDENT_TASKS", "",
                doc="Analyst tasks per outcome (core/tasks.py): empty = built-in, 'off', or JSON overrides"),
)

_BY_NAME = {spec.name: spec for spec in SPECS}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _parse(spec: SettingSpec, raw: str) -> object:
    if spec.kind == "int":
        try:
            value = int(raw)
        except ValueError:
            raise ConfigurationError(f"setting {spec.name} must be a whole number, got {raw!r}") from None
        if value < 0:
            raise ConfigurationError(f"setting {spec.name} must not be negative")
        return value
    if spec.kind == "bool":
        if raw.strip().lower() in _TRUE:
            return True
        if raw.strip().lower() in _FALSE:
            return False
        raise ConfigurationError(f"setting {spec.name} must be true or false, got {raw!r}")
    if spec.kind == "list":
        return frozenset(item.strip().lower() for item in raw.replace(";", ",").split(",") if item.strip())
    if spec.kind == "url":
        parsed = urlparse(raw)
        # Plain http is accepted only for loopback emulators: a real API is always https.
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ConfigurationError(f"setting {spec.name} must be an https URL")
        if parsed.scheme == "http" and not _is_loopback(parsed.hostname):
            raise ConfigurationError(f"setting {spec.name} must use https (http only for loopback)")
        return raw.rstrip("/")
    return Secret(raw) if spec.secret else raw


@dataclass(frozen=True)
class Settings:
    """Parsed settings. Values are looked up by setting name: ``settings["DRY_RUN"]``."""

    values: Mapping[str, object] = field(default_factory=dict)
    problems: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        problems: dict[str, str] = {}
        for spec in SPECS:
            raw = env.get(spec.name)
            if raw is None or (raw == "" and spec.default is None):
                raw = spec.default
            if raw is None:
                values[spec.name] = None
                continue
            if raw.startswith("@Microsoft.KeyVault("):
                # An unresolved Key Vault reference reaches the app as its literal text.
                values[spec.name] = None
                problems[spec.name] = (f"setting {spec.name} is an unresolved Key Vault reference: grant the "
                                       "function identity 'Key Vault Secrets User' and check the secret exists")
                continue
            try:
                values[spec.name] = _parse(spec, raw)
            except ConfigurationError as exc:
                values[spec.name] = None
                problems[spec.name] = exc.message
        return cls(values=values, problems=problems)

    def __getitem__(self, name: str) -> object:
        if name in self.problems:
            raise ConfigurationError(self.problems[name])
        return self.values[name]

    def require(self, *names: str) -> None:
        """Raise a ConfigurationError naming every listed setting that is missing or malformed."""
        bad = [name for name in names if name in self.problems or self.values.get(name) is None]
        if bad:
            raise ConfigurationError("missing or malformed setting(s): " + ", ".join(bad))

    def report(self) -> dict[str, str]:
        """State of every setting for the health check: never a value, only ok/missing/invalid/default."""
        out: dict[str, str] = {}
        for spec in SPECS:
            if spec.name in self.problems:
                out[spec.name] = "invalid: " + self.problems[spec.name]
            elif self.values.get(spec.name) is None:
                out[spec.name] = "missing"
            else:
                out[spec.name] = "set"
        return out


_cached: Settings | None = None


def get_settings() -> Settings:
    """Settings of this process. App settings change only with a restart, so read them once."""
    global _cached
    if _cached is None:
        _cached = Settings.from_env()
    return _cached


def spec(name: str) -> SettingSpec:
    return _BY_NAME[name]


__all__ = ["SPECS", "Secret", "SettingSpec", "Settings", "get_settings", "spec"]
