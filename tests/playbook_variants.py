"""Run what the registry in infra/main.bicep deploys, by its deployed name, as Sentinel would fire it.

A deployed playbook's definition is the one infra/app/playbook.bicep deploys (``tools.playbook_check.deployed``
builds the alert and entity variants the same way); its Sentinel connection is the connector stand-in
(``localdev.sentinel_connector``), which checks that the trigger hands over the body and serves "Alert - Get
incident" from the ARM emulator.
"""

from __future__ import annotations

import threading
from typing import Any

from localdev.playbooks import PlaybookRunner, RunResult, bicep_parameters
from localdev.sentinel_connector import SentinelConnector
from tools.playbook_check import deployed


def runner_for(name: str, host, connector: SentinelConnector, time_scale: float = 0.001,
               **parameters: Any) -> PlaybookRunner:
    """A runner of the deployed playbook ``name`` against ``host`` (a tests.conftest.HostClient)."""
    return PlaybookRunner(deployed(name).definition(),
                          bicep_parameters(host.host.url, host.host.function_key) | parameters,
                          connectors=connector.connectors(), name=name, time_scale=time_scale)


def run(name: str, host, connector: SentinelConnector, body: Any, **parameters: Any) -> RunResult:
    with runner_for(name, host, connector, **parameters) as runner:
        return runner.run(body)


class Running:
    """A deployed playbook run in a thread: it blocks in its HTTP-webhook wait until someone answers."""

    def __init__(self, name: str, host, connector: SentinelConnector, body: Any, **parameters: Any) -> None:
        self.runner = runner_for(name, host, connector, time_scale=0.01, **parameters)
        self.result: RunResult | None = None
        self.thread = threading.Thread(target=self._run, args=(body,), daemon=True)
        self.thread.start()

    def _run(self, body: Any) -> None:
        try:
            self.result = self.runner.run(body)
        finally:
            self.runner.close()

    def join(self) -> RunResult:
        self.thread.join(60)
        assert self.result is not None, "the playbook run did not finish"
        return self.result
