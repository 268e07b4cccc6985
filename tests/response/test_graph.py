"""The Entra client (msgraph-sdk) against the Graph emulator over real HTTP, tokens from the Entra emulator."""

from __future__ import annotations

import pytest

from core.errors import DownstreamError, Throttled
from localdev.emulators.entra import USER_ASSIGNED_CLIENT_ID
from localdev.emulators.graph import ADELE, GraphEmulator
from response.graph import EntraClient, GraphDenied, LicenceRequired

# msgraph-sdk and kiota warn about their own deprecated classes when their modules are imported.
pytestmark = pytest.mark.filterwarnings("ignore:.*deprecated:DeprecationWarning")


@pytest.fixture(scope="module")
def server(entra):
    with GraphEmulator(authority=entra) as emulator:
        yield emulator


@pytest.fixture
def graph(server):
    server.reset()
    return server


@pytest.fixture
def client(graph, tokens):
    with EntraClient(tokens, graph.url, timeout=5, retries=2, max_retry_after=2) as entra_client:
        yield entra_client


def test_base_url_points_the_sdk_at_the_emulator(client, graph):
    user = client.get_user(ADELE)
    assert (user.id, user.user_principal_name, user.account_enabled) == (ADELE, "adele.vance@contoso.com", True)
    (request,) = graph.received
    assert request.path == f"/v1.0/users/{ADELE}" and request.headers["Authorization"].startswith("Bearer emu-")
    assert request.query["$select"].split(",")[:2] == ["id", "userPrincipalName"]
    assert client.get_user("Adele.Vance@contoso.com").id == ADELE
    assert client.get_user("nobody@contoso.com") is None


def test_actions(client, graph):
    assert client.risk_state(ADELE) is None
    client.confirm_compromised([ADELE])
    assert client.risk_state(ADELE) == "confirmedCompromised"
    assert client.revoke_sessions(ADELE) is True
    client.disable(ADELE)
    assert client.get_user(ADELE).account_enabled is False
    assert graph.requests_to("PATCH")[0].json["accountEnabled"] is False


def test_licence_and_privilege_refusals(client, graph):
    graph.licensed = False
    with pytest.raises(LicenceRequired, match="P2"):
        client.risk_state(ADELE)  # "Your tenant is not licensed for this feature."
    with pytest.raises(LicenceRequired, match="premium license"):
        client.confirm_compromised([ADELE])  # Authentication_RequestFromNonPremiumTenantOrB2CTenant
    for _ in range(2):  # every form, whichever comes
        with pytest.raises(LicenceRequired):
            client.risk_state(ADELE)
    graph.add_user("c0ffee00-0000-4000-8000-00000000ad01", "admin@contoso.com", privileged=True)
    with pytest.raises(GraphDenied) as denied:
        client.disable("c0ffee00-0000-4000-8000-00000000ad01")
    assert denied.value.code == "Authorization_RequestDenied" and denied.value.status == 403


def test_retries_are_bounded(client, graph):
    graph.fail(503, retry_after=0)
    graph.fail(500)
    assert client.get_user(ADELE).id == ADELE and graph.faults_served == 2  # retries=2: three attempts
    graph.fail(429, times=5, retry_after=30)  # longer than max_retry_after: handed back, not slept
    with pytest.raises(Throttled) as throttled:
        client.get_user(ADELE)
    assert throttled.value.retry_after == 30 and graph.faults_served == 3
    graph.clear_faults()
    graph.fail(502, times=5)
    with pytest.raises(DownstreamError, match="HTTP 502"):
        client.get_user(ADELE)


def test_unreachable_graph_is_a_downstream_error(tokens):
    with EntraClient(tokens, "http://127.0.0.1:9", timeout=2, retries=0) as client, \
            pytest.raises(DownstreamError, match="could not be reached"):
        client.get_user(ADELE)


def test_the_sdk_is_used_without_its_models(tokens, graph):
    """The first Entra action in a fresh process must not materialise whole Graph models (issue #16.5: the first
    User deserialisation imported ~1,700 modules, seconds of a cold request): raw JSON through the adapter."""
    import subprocess
    import sys

    code = (
        "import os, sys\n"
        f"os.environ.update({graph_env(tokens)!r})\n"
        "from azure.identity import ManagedIdentityCredential\n"
        "from core.credentials import TokenProvider\n"
        "from response.graph import EntraClient\n"
        "before = len(sys.modules)\n"
        f"with EntraClient(TokenProvider(ManagedIdentityCredential(client_id={USER_ASSIGNED_CLIENT_ID!r})), "
        f"{graph.url!r}) as client:\n"
        f"    user = client.get_user({ADELE!r}); client.disable(user.id); client.risk_state(user.id)\n"
        "models = [m for m in sys.modules if m.startswith(('msgraph.generated.models', 'msgraph.generated.users'))]\n"
        "print(len(models), len(sys.modules) - before)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=".")
    models, loaded = map(int, out.stdout.split())
    assert models == 0, f"{models} generated Graph models and request builders imported"
    assert loaded < 700, f"{loaded} modules imported by the first calls"


def graph_env(tokens) -> dict[str, str]:
    import os

    return {name: os.environ[name] for name in ("IDENTITY_ENDPOINT", "IDENTITY_HEADER")}


def test_import_of_the_module_does_not_load_the_sdk():
    import subprocess
    import sys

    code = "import sys, response.graph, response.functions; print('msgraph' in sys.modules, 'httpx' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=".")
    assert out.stdout.split() == ["False", "False"]


def test_calls_from_many_threads_at_once_each_get_their_own_answer(client, graph):
    """The pack's functions call Graph from their worker threads and from the threads a response fans out to; each call
    runs the SDK's middleware in its own thread over the one shared connection pool. Sixteen calls are held at the
    emulator until all sixteen are in flight (an event, not a clock): none waits for another, none gets another's
    answer, and a retried 503 stays with its own call."""
    import uuid
    from concurrent.futures import ThreadPoolExecutor

    ids = [str(uuid.uuid4()) for _ in range(16)]
    for n, oid in enumerate(ids):
        graph.add_user(oid, f"parallel{n}@contoso.com")
    graph.fail(503, times=2, retry_after=0, path=rf"/users/{ids[3]}$")
    held = graph.hold(lambda: len(graph.requests_to("GET", r"/users/")) >= len(ids) + 2, times=len(ids),
                      path=r"/users/", timeout=120)
    with ThreadPoolExecutor(len(ids)) as pool:
        users = list(pool.map(client.get_user, ids))
    assert [u.id for u in users] == ids and [u.user_principal_name for u in users] == [
        f"parallel{n}@contoso.com" for n in range(len(ids))]
    assert held.released == [True] * len(ids)  # every held call saw the others (and the 503's two retries) arrive
