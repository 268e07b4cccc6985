"""Orchestration fixtures: fresh incidents and a loopback stand-in for a Logic App's callback URL."""

from __future__ import annotations

import pytest

from tests.fixtures import fresh_incident
from tests.orchestration.helpers import CallbackReceiver


@pytest.fixture(scope="session")
def callbacks():
    with CallbackReceiver() as receiver:
        yield receiver


@pytest.fixture
def incident(clean_stack, callbacks):
    """A fresh incident (own id and number) like the sample, seeded in the ARM emulator: its trigger body."""
    callbacks.reset()
    body = fresh_incident()
    clean_stack.arm.seed_from_trigger(body)
    return body
