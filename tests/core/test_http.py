"""The shared session: bounded retries that honour Retry-After, and PackErrors for the rest."""

import time

import pytest

from core.errors import DownstreamError, Throttled
from core.http import build_session, call
from localdev.emulators.base import Emulator, Response
from tests.core.concurrent import pool_full_warnings


class Echo(Emulator):
    name = "echo"

    def __init__(self) -> None:
        super().__init__()
        self.route("GET", r"/ok", lambda req: Response(200, {"ok": True}))
        self.route("PUT", r"/ok", lambda req: Response(200, {"ok": True}))


@pytest.fixture(scope="module")
def server():
    with Echo() as echo:
        yield echo


@pytest.fixture
def echo(server):
    server.reset()
    return server


def session():
    return build_session(timeout=1.0, retries=3, backoff=0.01, max_retry_after=2)


def test_short_retry_after_is_waited_for(echo):
    echo.fail(429, times=1, retry_after=1)
    started = time.monotonic()
    response = call(session(), "GET", echo.url + "/ok", service="Echo")
    assert response.status_code == 200
    assert time.monotonic() - started >= 0.9
    assert len(echo.received) == 2


def test_long_retry_after_goes_back_to_the_logic_app(echo):
    echo.fail(429, times=5, retry_after=120)
    with pytest.raises(Throttled) as error:
        call(session(), "GET", echo.url + "/ok", service="Echo")
    assert error.value.status == 429 and error.value.retry_after == 120
    assert len(echo.received) == 1  # not slept on, not retried


def test_server_errors_are_retried_then_reported(echo):
    echo.fail(503, times=2)
    assert call(session(), "PUT", echo.url + "/ok", service="Echo", json={}).status_code == 200
    echo.reset()
    echo.fail(500, times=10)
    with pytest.raises(DownstreamError) as error:
        call(session(), "GET", echo.url + "/ok", service="Echo")
    assert error.value.status == 502 and error.value.retry_after
    assert len(echo.received) == 4


def test_dropped_connections_and_refused_ports(echo):
    echo.fail(drop=True, times=1)
    assert call(session(), "GET", echo.url + "/ok", service="Echo").status_code == 200
    with pytest.raises(DownstreamError, match="could not be reached"):
        call(session(), "GET", "http://127.0.0.1:9/ok", service="Echo")


def test_client_errors_are_returned_for_the_caller(echo):
    assert call(session(), "GET", echo.url + "/missing", service="Echo").status_code == 404


def test_the_pool_size_is_a_setting_and_one_session_keeps_that_many_connections(echo, caplog):
    from core.http import session_from_settings
    from core.settings import Settings

    echo.latency = 0.05  # the calls overlap, as an action's fanned-out calls do
    try:
        roomy = session_from_settings(Settings.from_env({"HTTP_POOL_SIZE": "64"}))
        assert pool_full_warnings(caplog, 48, lambda _: roomy.get(echo.url + "/ok", timeout=10)) == 0
        tight = session_from_settings(Settings.from_env({"HTTP_POOL_SIZE": "4"}))
        assert pool_full_warnings(caplog, 48, lambda _: tight.get(echo.url + "/ok", timeout=10)) > 0
    finally:
        echo.latency = 0.0
