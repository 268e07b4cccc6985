"""Orchestration fixtures: fresh incidents and a loopback stand-in for a Logic App's callback URL."""

from __future__ import annotations

import uuid

import pytest

from tests.fixtures import sample
from tests.orchestration.helpers import CallbackReceiver


@pytest.fixture(scope="session")
def callbacks():
    with CallbackReceiver() as receiver:
        yield receiver


@pytest.fixture
def incident(clean_stack, callbacks):
    """A fresh incident (own id and number) like the sample, seeded in the ARM emulator: its trigger body."""
    callbacks.reset()
    body = sample("incident-trigger.json")
    guid = str(uuid.uuid4())
    obj = body["object"]
    obj["id"] = obj["id"].rsplit("/", 1)[0] + "/" + guid
    obj["name"] = guid
    obj["properties"]["incidentNumber"] = uuid.uuid4().int % 100000
    obj["properties"]["incidentUrl"] = obj["properties"]["incidentUrl"].rsplit("/", 1)[0] + "/" + guid
    clean_stack.arm.seed_from_trigger(body)
    return body
