"""What the real Python worker reports to the Functions host (``get_function_json()``) is valid (issue 17.15).

``func start`` cannot run on the build machines; this is its stand-in. Each function's binding metadata must be
something the host accepts: one trigger binding of a known type, valid names, auth levels and methods, NCRONTAB
schedules, and connection settings that exist (core/settings.py, or the host's own AzureWebJobsStorage).
Also: local.settings.sample.json names every setting, so `func start` users see them all.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from core.settings import SPECS
from tests.infra.test_wiring import app_functions

ROOT = Path(__file__).resolve().parents[2]
TRIGGERS = {"httpTrigger", "timerTrigger", "queueTrigger", "blobTrigger", "eventGridTrigger", "serviceBusTrigger"}
AUTH_LEVELS = {"anonymous", "function", "admin"}
HTTP_METHODS = {"get", "post", "put", "patch", "delete", "head", "options", "trace"}
NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
SETTINGS = {spec.name for spec in SPECS}


def metadata() -> list[tuple[str, dict]]:
    return [(fn.get_function_name(), json.loads(fn.get_function_json())) for fn in app_functions()]


def ncrontab(schedule: str) -> bool:
    fields = schedule.split()
    return len(fields) == 6 and all(re.fullmatch(r"[\d*/,\-]+|[A-Za-z]{3}", f) for f in fields)


def test_function_names_are_unique_and_valid():
    names = [name for name, _ in metadata()]
    assert len(names) == len(set(n.lower() for n in names))
    assert all(NAME.match(n) for n in names), names


@pytest.mark.parametrize("name,spec", metadata(), ids=lambda v: v if isinstance(v, str) else "")
def test_binding_metadata_is_what_the_host_accepts(name, spec):
    bindings = spec["bindings"]
    triggers = [b for b in bindings if b["type"].endswith("Trigger")]
    assert len(triggers) == 1, f"{name}: {len(triggers)} trigger bindings"
    (trigger,) = triggers
    assert trigger["type"] in TRIGGERS, trigger["type"]
    assert trigger["direction"].lower() == "in"
    names = [b["name"] for b in bindings]
    assert len(names) == len(set(names)) and all(n == "$return" or NAME.match(n) for n in names), names
    if trigger["type"] == "httpTrigger":
        assert trigger["authLevel"].lower() in AUTH_LEVELS
        assert {m.lower() for m in trigger.get("methods") or ()} <= HTTP_METHODS
        route = trigger.get("route") or ""
        assert not route.startswith("/") and " " not in route, route
        outputs = [b for b in bindings if b["type"] == "http" and b["direction"].lower() == "out"]
        assert len(outputs) == 1, f"{name}: an HTTP trigger needs one http output binding"
    elif trigger["type"] == "timerTrigger":
        assert ncrontab(trigger["schedule"]), trigger["schedule"]
    elif trigger["type"] == "queueTrigger":
        assert re.fullmatch(r"[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){2,62}", trigger["queueName"]), trigger["queueName"]
        connection = trigger.get("connection") or "AzureWebJobsStorage"
        assert connection == "AzureWebJobsStorage" or connection in SETTINGS, \
            f"{name}: connection {connection} is no setting of core/settings.py"


def test_a_broken_binding_is_caught():
    name, spec = next((n, s) for n, s in metadata() if s["bindings"][0]["type"] == "timerTrigger")
    broken = json.loads(json.dumps(spec))
    broken["bindings"][0]["schedule"] = "*/5 * * * *"  # five fields: a Unix cron, not NCRONTAB
    with pytest.raises(AssertionError):
        test_binding_metadata_is_what_the_host_accepts(name, broken)


def test_local_settings_sample_names_every_setting():
    sample = json.loads((ROOT / "local.settings.sample.json").read_text())
    values = sample["Values"]
    assert values["FUNCTIONS_WORKER_RUNTIME"] == "python" and values["AzureWebJobsStorage"]
    missing = sorted(SETTINGS - set(values))
    assert not missing, f"local.settings.sample.json lacks {missing}"
