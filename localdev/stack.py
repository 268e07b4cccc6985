"""The whole pack on one machine: Azurite, the API emulators and the local function host.

Tests, ``make demo`` and ``make bench`` all start the same stack, so what the demo shows is
what the tests check. The host runs as a separate process with the app settings a real
deployment would have, pointed at the loopback emulators.
"""

from __future__ import annotations

import json
import secrets
from contextlib import ExitStack
from typing import Any

from localdev.azurite import Azurite
from localdev.emulators.defender import DefenderEmulator
from localdev.emulators.entra import USER_ASSIGNED_CLIENT_ID, USER_ASSIGNED_PRINCIPAL_ID, EntraEmulator
from localdev.emulators.graph import LOCAL_PASSWORD, MFA_CODE, GraphEmulator
from localdev.emulators.sentinel_arm import SentinelArmEmulator
from localdev.emulators.servicenow import ServiceNowEmulator
from localdev.emulators.virustotal import VirusTotalEmulator
from localdev.emulators.webhooks import SlackWebhookEmulator, TeamsWebhookEmulator
from localdev.host import HostProcess
from localdev.latency import profile as latency_profile

VT_KEY = "vt-local-demo-key"
APPROVAL_MAILBOX = "soc-approvals@contoso.com"
APPROVERS = ("alice@contoso.com", "bob@contoso.com")
APPROVAL_SIGNING_KEY = "approval-" + secrets.token_hex(24)
SNOW_USER = "svc_sentinel_sync"  # the integration user of the sample tickets
SNOW_PASSWORD = "snow-local-" + secrets.token_hex(6)
SNOW_WEBHOOK_SECRET = "snow-hook-" + secrets.token_hex(8)
EASYAUTH_CLIENT_ID = "e45a0000-0000-4000-8000-00000000ea01"  # the app registration Easy Auth signs people in for
SIGN_IN_CLIENT_ID = "e45a0000-0000-4000-8000-00000000a991"  # the app registration of the app's own sign-in
MFA_AUTH_CONTEXT = "c1"  # the Conditional Access authentication context: MFA, sign-in frequency every time
# Functions with their own key (issue 14.3): the ServiceNow push and the firewall block list.
OWN_KEY_FUNCTIONS = ("servicenow_inbound", "ip_blocklist")
# A host imports the whole app before it listens: about a second idle, much longer on a loaded 2-core machine.
HOST_STARTUP_SECONDS = 120.0


class Stack:
    """Start with ``with Stack() as stack:``; ``stack.host()`` starts a function host."""

    def __init__(self, *, validator: Any = None, vt_per_minute: int | None = None,
                 latency: str | dict[str, float] | None = None) -> None:
        self._exit = ExitStack()
        self.validator = validator
        self.vt_per_minute = vt_per_minute
        # A latency profile (localdev/latency.py): None = as fast as loopback, and no proxy in front of Azurite.
        self.latency = latency
        self.function_key = "fk-" + secrets.token_hex(8)
        self.master_key = "mk-" + secrets.token_hex(8)
        self.function_keys = {name: f"own-{name[:4]}-" + secrets.token_hex(8) for name in OWN_KEY_FUNCTIONS}

    def __enter__(self) -> Stack:
        try:
            self.azurite = self._exit.enter_context(Azurite(latency_proxy=self.latency is not None))
            self.entra = self._exit.enter_context(EntraEmulator())
            self.arm = self._exit.enter_context(SentinelArmEmulator(authority=self.entra, validator=self.validator))
            self.vt = self._exit.enter_context(VirusTotalEmulator(api_keys=(VT_KEY,), per_minute=self.vt_per_minute))
            self.snow = self._exit.enter_context(ServiceNowEmulator(users={SNOW_USER: SNOW_PASSWORD,
                                                                           "megan.bowen": "analyst"}))
            self.teams = self._exit.enter_context(TeamsWebhookEmulator())
            self.slack = self._exit.enter_context(SlackWebhookEmulator())
            # Graph behind one GRAPH_ENDPOINT: users and Identity Protection (response), sendMail (approval mail;
            # ``outbox`` is what it accepted). ``mail`` names the same emulator.
            self.graph = self._exit.enter_context(GraphEmulator(authority=self.entra, mailboxes=(APPROVAL_MAILBOX,)))
            self.mail = self.graph
            self.outbox = self.graph.outbox
            # Entra signs people in from the Graph emulator's directory: for the app's own sign-in (the default,
            # SIGN_IN_MODE=app) and for the host's Easy Auth emulation (SIGN_IN_MODE=easyauth, ``easyauth_env``).
            # The app's registration is the one infra/app/auth.bicep creates: its redirect URI, no implicit ID
            # tokens, the optional claims auth_time/upn/email, and the function identity as federated credential.
            sign_in = self.entra.sign_in
            sign_in.directory = self.graph
            sign_in.register_app(EASYAUTH_CLIENT_ID, "http://127.0.0.1/.auth/login/aad/callback")
            sign_in.register_app(SIGN_IN_CLIENT_ID, "http://127.0.0.1/api/auth/callback",
                                 federated=((sign_in.issuer_v2, USER_ASSIGNED_PRINCIPAL_ID),),
                                 implicit_id_tokens=False, optional_claims=("auth_time", "upn", "email"))
            sign_in.define_context(MFA_AUTH_CONTEXT, mfa=True, every_time=True)
            self.mde = self._exit.enter_context(DefenderEmulator(authority=self.entra))
            if self.latency is not None:
                self.set_latency(self.latency)
        except BaseException:
            self._exit.close()
            raise
        return self

    def set_latency(self, value: str | dict[str, float]) -> dict[str, float]:
        """Apply a latency profile to every emulator and to storage (the stack must have been started with a
        ``latency`` for storage to be slowed); returns the profile applied."""
        applied = latency_profile(value)
        for emulator in self.emulators:
            emulator.latency = applied.get(emulator.name, 0.0)
        self.azurite.set_latency(applied.get("storage", 0.0))
        return applied

    def __exit__(self, *exc) -> None:
        self._exit.close()

    @property
    def emulators(self) -> list:
        return [self.entra, self.arm, self.vt, self.snow, self.teams, self.slack, self.graph, self.mde]

    def reset(self) -> None:
        for emulator in self.emulators:
            emulator.reset()

    def env(self, **overrides: str) -> dict[str, str]:
        """App settings of a deployment whose clouds are the loopback emulators."""
        env = {
            **self.entra.env(),
            "ARM_ENDPOINT": self.arm.url,
            "VIRUSTOTAL_ENDPOINT": self.vt.url,
            "VIRUSTOTAL_API_KEY": VT_KEY,
            **self.snow.env(SNOW_USER),
            "SERVICENOW_WEBHOOK_SECRET": SNOW_WEBHOOK_SECRET,
            "STATE_STORAGE_CONNECTION": self.azurite.connection_string,
            "STATE_TABLE_PREFIX": "t" + secrets.token_hex(4),
            "HTTP_TIMEOUT_SECONDS": "5",
            "HTTP_MAX_RETRY_AFTER_SECONDS": "2",
            "VIRUSTOTAL_QUOTA_RETRY_SECONDS": "1",
            "LOCAL_FUNCTION_KEY": self.function_key,
            "LOCAL_MASTER_KEY": self.master_key,
            "LOCAL_QUEUE_POLL_SECONDS": "0.2",
            "GRAPH_ENDPOINT": self.graph.url,
            "MDE_ENDPOINT": self.mde.url,
            "TEAMS_WEBHOOK_URL": self.teams.webhook_url,
            "SLACK_WEBHOOK_URL": self.slack.webhook_url,
            "APPROVAL_MAILBOX": APPROVAL_MAILBOX,
            "APPROVERS": ",".join(APPROVERS),
            "APPROVAL_SIGNING_KEY": APPROVAL_SIGNING_KEY,
            "LOCAL_MODE": "true",  # approval callbacks may go to the playbook runner's loopback server
            "LOCAL_FUNCTION_KEYS": json.dumps(self.function_keys),
            # The app's own sign-in (what Flex Consumption needs) at the Entra emulator's https authority: MSAL,
            # the function identity's token as client assertion (AZURE_CLIENT_ID: the user-assigned identity), and a
            # CA bundle that trusts the loopback certificate (requests reads REQUESTS_CA_BUNDLE).
            "SIGN_IN_MODE": "app",
            "SIGN_IN_CLIENT_ID": SIGN_IN_CLIENT_ID,
            "SIGN_IN_AUTHORITY": self.entra.sign_in.https_authority,
            "SIGN_IN_MFA_AUTH_CONTEXT": MFA_AUTH_CONTEXT,
            "AZURE_CLIENT_ID": USER_ASSIGNED_CLIENT_ID,
            "REQUESTS_CA_BUNDLE": self.entra.sign_in.ca_bundle,
        }
        env.update(overrides)
        return env

    def easyauth_env(self) -> dict[str, str]:
        """Overrides for a host with App Service Authentication in front (``SIGN_IN_MODE=easyauth``), emulated by the
        local host and signing people in at the Entra emulator."""
        return {"SIGN_IN_MODE": "easyauth", "LOCAL_EASYAUTH_AUTHORITY": self.entra.sign_in.authority,
                "LOCAL_EASYAUTH_CLIENT_ID": EASYAUTH_CLIENT_ID, "LOCAL_EASYAUTH_ISSUER": self.entra.sign_in.issuer}

    @staticmethod
    def sign_in(http, host_url: str, upn: str, *, mfa: bool = True, next_path: str | None = None,
                mode: str = "app") -> object:
        """Sign ``upn`` in with a requests Session (it keeps the cookies), as a browser does: the app's own sign-in
        (``mfa``: a fresh multi-factor sign-in, the step-up), or the host's Easy Auth with ``mode="easyauth"``."""
        from localdev.easyauth import sign_in, sign_in_app

        code = MFA_CODE if mfa else None
        if mode == "easyauth":
            return sign_in(http, host_url, upn, LOCAL_PASSWORD, mfa_code=code, next_path=next_path or "/")
        return sign_in_app(http, host_url, upn, LOCAL_PASSWORD, mfa_code=code, fresh_mfa=mfa,
                           next_path=next_path or "/api/health")

    def host(self, **overrides: str) -> HostProcess:
        """A started function host process with this stack's settings (stop it when done)."""
        host = HostProcess(env=self.env(**overrides), startup_timeout=HOST_STARTUP_SECONDS)
        host.start()
        return host
