"""Every setting the pack reads, in one place.

Settings come from environment variables (app settings in Azure, Key Vault references for
secrets). A malformed value is reported by name when the settings are loaded; a missing
value is reported by name by the action that needs it (``Settings.require``), so one
unconfigured integration does not take the others down.
"""

from __future__ import annotations

import ipaddress
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlparse

from core.errors import ConfigurationError

log = logging.getLogger(__name__)

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
    SettingSpec("APPROVERS", "", "list", doc="Who may decide approvals: UPNs, user object ids, group object ids"),
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
                doc="Base URL of every link the pack builds (https://<app>.azurewebsites.net); required outside "
                    "LOCAL_MODE, never taken from a request's Host header"),
    SettingSpec("LOCAL_MODE", "false", "bool",
                doc="Local stack only: loopback callbacks, links from the request's origin; refused in Azure"),
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
    # -- people who decide: sign-in, approval targets, the user's own confirmation (issue 13, 14.1/14.4) --
    SettingSpec("APPROVAL_REQUIRE_SIGN_IN", "true", "bool",
                doc="Decision and answer pages need an Entra ID sign-in (SIGN_IN_MODE says whose); off only for "
                    "local tries (logged loudly and reported by health outside LOCAL_MODE)"),
    SettingSpec("BLOCK_IP_VERDICTS", "malicious,suspicious", "list",
                doc="VirusTotal verdicts for which an approval proposes blocking an IP; other IPs are listed as "
                    "not blocked, with the reason"),
    SettingSpec("DISPLAY_TIME_ZONE", "UTC",
                doc="IANA time zone of the deadlines in mails and notices (UTC is shown beside it); pages use the "
                    "browser's"),
    SettingSpec("CALLBACK_MAX_ATTEMPTS", "20", "int",
                doc="Deliveries of one Logic App callback before it is marked failed (with an audit comment)"),
    SettingSpec("CALLBACK_MAX_AGE_HOURS", "48", "int",
                doc="Hours after which an undelivered Logic App callback is marked failed (with an audit comment)"),
    SettingSpec("ASK_USER_TIMEOUT_MINUTES", "240", "int", doc="How long the user has to answer \"Was this you?\""),
    SettingSpec("ASK_USER_MFA_MAX_AGE_MINUTES", "30", "int",
                doc="\"Yes, it was me\" counts only with a multi-factor sign-in at most this old"),
    SettingSpec("ASK_USER_REVOKE_ON_NO", "false", "bool",
                doc="\"No, it wasn't me\" also revokes the user's sign-in sessions (it always confirms compromise)"),
    SettingSpec("ASK_USER_DISMISS_RISK_ON_YES", "false", "bool",
                doc="\"Yes, it was me\" (with fresh MFA) also dismisses the user's risk in Identity Protection"),
    # -- response guardrails, status links, concurrency and connection pools (issues 14.4, 14.8, 16.1) --
    SettingSpec("RESPONSE_RADIUS_WINDOW_HOURS", "24", "int",
                doc="Window of the blast-radius cap: distinct targets of one action on one incident within it count"),
    SettingSpec("DISABLED_ACTIONS", "", "list",
                doc="Kill switch: actions (function names, e.g. entra_disable_user, mde_isolate) that answer 409"),
    SettingSpec("RESPONSE_STATUS_LINK_HOURS", "24", "int",
                doc="Lifetime of the signed status URL (202 Location) of isolate / release"),
    SettingSpec("RESPONSE_POOL_SIZE", "8", "int", doc="Targets of one response call acted on side by side"),
    SettingSpec("HTTP_POOL_SIZE", "64", "int",
                doc="Connections kept per host by the process's HTTP clients (requests session, Graph client)"),
    SettingSpec("STATE_POOL_SIZE", "200", "int",
                doc="Connections kept to Table and Queue Storage by the process (concurrent calls past it reconnect)"),
    # -- who signs people in for the decision pages (issue 13 on Flex Consumption; core/principal.py, core/signin.py) --
    SettingSpec("SIGN_IN_MODE", "app",
                doc="app: the app signs people in (OpenID Connect with MSAL; what Flex Consumption needs, the Easy "
                    "Auth header is never read); easyauth: App Service Authentication in front (other plans)"),
    SettingSpec("SIGN_IN_CLIENT_ID", None, doc="Client id of the Entra app registration the in-app sign-in uses"),
    SettingSpec("SIGN_IN_AUTHORITY", None, "url",
                doc="Entra authority with the tenant, https://login.microsoftonline.com/<tenant id> (token endpoint "
                    "and signing keys come from its discovery document)"),
    SettingSpec("SIGN_IN_SESSION_MINUTES", "480", "int",
                doc="Lifetime of the in-app sign-in session cookie (App Service Authentication's default is 8 h)"),
    SettingSpec("SIGN_IN_MFA_AUTH_CONTEXT", "",
                doc="Conditional Access authentication context id (c1..c99) whose policy requires MFA every time; "
                    "\"Yes, it was me\" asks for it in app mode (empty: Yes cannot count there)"),
    # ServiceNow sync (issues 15, 16): how many tickets of a poll page are reconciled side by side, how far
    # one poll run reads, and how long a change stamped in ServiceNow may take to commit (the poll reads
    # that window again once it has caught up).
    SettingSpec("SERVICENOW_SYNC_CONCURRENCY", "8", "int",
                doc="Tickets of one ServiceNow poll page reconciled side by side (pool size)"),
    SettingSpec("SERVICENOW_POLL_MAX_PAGES", "20", "int",
                doc="Pages one poll run reads at most; the rest follows at the next run"),
    SettingSpec("SERVICENOW_POLL_OVERLAP_SECONDS", "10", "int",
                doc="How long a ServiceNow update may take to commit; the poll re-reads that window once"),
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
    # -- blocking files, URLs and domains as Defender indicators (issue #18, item 6) -----------------------------
    SettingSpec("BLOCK_INDICATOR_VERDICTS", "malicious", "list",
                doc="Latest VirusTotal verdicts (malicious, suspicious, harmless, unknown) for which block-indicators "
                    "blocks a file, URL or domain; add none to also block what was never looked up"),
    SettingSpec("BLOCK_INDICATOR_EXPIRY_HOURS", "2160", "int",
                doc="Lifetime of a file, URL or domain block (Defender indicator); a new block renews the pack's own"),
    SettingSpec("PROTECTED_INDICATORS", "microsoft.com,*.microsoft.com,microsoftonline.com,*.microsoftonline.com,"
                                        "windowsupdate.com,*.windowsupdate.com,http*://login.microsoftonline.com/*",
                "list", doc="Domains, URLs and hashes (exact or fnmatch patterns) block-indicators never blocks, "
                            "besides the internal domains"),
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
    warnings: Mapping[str, str] = field(default_factory=dict)  # allowed, but unsafe: reported by health

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
        warnings = _cross_checks(env, values, problems)
        return cls(values=values, problems=problems, warnings=warnings)

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
            elif spec.name in self.warnings:
                out[spec.name] = "set (warning: " + self.warnings[spec.name] + ")"
            else:
                out[spec.name] = "set"
        return out


def running_in_azure(env: Mapping[str, str] | None = None) -> bool:
    """App Service sets these on every instance; nothing local does."""
    env = os.environ if env is None else env
    return bool(env.get("WEBSITE_INSTANCE_ID") or env.get("WEBSITE_SITE_NAME"))


def _cross_checks(env: Mapping[str, str], values: dict[str, object], problems: dict[str, str]) -> dict[str, str]:
    """Rules between settings: LOCAL_MODE is refused in Azure (it loosens callbacks and links), and sign-in
    turned off outside LOCAL_MODE is allowed but logged loudly and reported. Returns the warnings."""
    warnings: dict[str, str] = {}
    if values.get("LOCAL_MODE") and running_in_azure(env):
        values["LOCAL_MODE"] = None
        problems["LOCAL_MODE"] = ("setting LOCAL_MODE is refused when running in Azure (WEBSITE_INSTANCE_ID / "
                                  "WEBSITE_SITE_NAME are set): remove it from the app settings")
    if values.get("APPROVAL_REQUIRE_SIGN_IN") is False and not values.get("LOCAL_MODE"):
        warnings["APPROVAL_REQUIRE_SIGN_IN"] = ("sign-in is OFF outside LOCAL_MODE: whoever holds an approval link "
                                                "decides as the approver it names")
        log.error("SECURITY: APPROVAL_REQUIRE_SIGN_IN is off outside LOCAL_MODE: approval links decide without a "
                  "signed-in identity; turn it back on")
    mode = str(values.get("SIGN_IN_MODE") or "").strip().lower()
    if mode not in ("app", "easyauth"):
        values["SIGN_IN_MODE"] = None
        problems["SIGN_IN_MODE"] = "setting SIGN_IN_MODE must be app or easyauth"
    elif mode == "app" and not values.get("SIGN_IN_MFA_AUTH_CONTEXT") and values.get("APPROVAL_REQUIRE_SIGN_IN") \
            and not values.get("LOCAL_MODE"):
        warnings["SIGN_IN_MFA_AUTH_CONTEXT"] = ("no authentication context for a fresh multi-factor sign-in: "
                                                "\"Yes, it was me\" cannot be counted (docs/deploy.md, sign-in)")
    return warnings


_cached: Settings | None = None


def get_settings() -> Settings:
    """Settings of this process. App settings change only with a restart, so read them once."""
    global _cached
    if _cached is None:
        _cached = Settings.from_env()
    return _cached


def spec(name: str) -> SettingSpec:
    return _BY_NAME[name]


__all__ = ["SPECS", "Secret", "SettingSpec", "Settings", "get_settings", "running_in_azure", "spec"]
