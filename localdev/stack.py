"""The whole pack on one machine: Azurite, the API emulators and the local function host.

Tests, ``make demo`` and ``make bench`` all start the same stack, so what the demo shows is
what the tests check. The host runs as a separate process with the app settings a real
deployment would have, pointed at the loopback emulators.
"""

from __future__ import annotations

import secrets
from contextlib import ExitStack
from typing import Any

from localdev.azurite import Azurite
from localdev.emulators.defender import DefenderEmulator
from localdev.emulators.entra import EntraEmulator
from localdev.emulators.graph import GraphEmulator
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
        }
        env.update(overrides)
        return env

    def host(self, **overrides: str) -> HostProcess:
        """A started function host process with this stack's settings (stop it when done)."""
        host = HostProcess(env=self.env(**overrides), startup_timeout=HOST_STARTUP_SECONDS)
        host.start()
        return host
