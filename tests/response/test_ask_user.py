"""The user's own confirmation end to end: infra/playbooks/response-ask-user.json run by
localdev.playbooks.PlaybookRunner (tests.orchestration.helpers.Started), the mail through the Graph emulator, the
user signed in through the host's Easy Auth (Entra emulator), Identity Protection on the Graph emulator."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
import requests

from localdev.easyauth import press
from localdev.emulators.graph import ADELE
from tests.conftest import wait_for
from tests.fixtures import fresh_incident
from tests.orchestration.helpers import CallbackReceiver, Started, form_of, origin_of, person

PLAYBOOK = Path(__file__).resolve().parents[2] / "infra" / "playbooks" / "response-ask-user.json"
ROUTE = "response/entra/ask-user"
ADELE_UPN = "adele.vance@contoso.com"
pytestmark = pytest.mark.e2e


@pytest.fixture
def incident(clean_stack):
    body = fresh_incident()
    clean_stack.arm.seed_from_trigger(body)
    return body


@pytest.fixture(scope="module")
def callbacks():
    with CallbackReceiver() as receiver:
        yield receiver


def question_link(stack) -> str:
    (mail,) = wait_for(lambda: stack.outbox.to(ADELE_UPN))
    assert mail["subject"].startswith("Was this you?")
    (link,) = re.findall(r'href="([^"]+/api/response/entra/ask-user/[0-9a-f]{32}\?[^"]+)"', mail["body"])
    return link.replace("&amp;", "&")


def answer(http: requests.Session, link: str, choice: str) -> requests.Response:
    return press(http, link, "answer", choice)


def comments(stack, incident) -> str:
    return " ".join(c["properties"]["message"] for c in stack.arm.comments(incident["object"]["id"]))


def test_no_it_wasnt_me_confirms_compromise_and_tells_the_soc(clean_stack, host, incident):
    run = Started(host, PLAYBOOK, incident)
    link = question_link(clean_stack)
    assert requests.get(link, timeout=30, allow_redirects=False).status_code == 302  # not signed in: sign-in first
    adele = person(clean_stack, host.host.url, ADELE_UPN, mfa=False)  # "No" counts without MFA: it only protects
    page = adele.get(link, timeout=30)
    assert page.status_code == 200 and "Was this you?" in page.text and "Sign-in from anonymizing proxy" in page.text
    assert '<meta name="viewport"' in page.text
    recorded = adele.post(link, data={**form_of(page), "answer": "No"}, headers={"Origin": origin_of(link)},
                          timeout=30)
    assert recorded.status_code == 200 and "securing your account" in recorded.text
    result = run.join()
    assert result.status == "Succeeded", result.timeline
    body = result["Ask_the_user"].body
    assert body["answer"] == "No" and body["answeredById"] == ADELE and body["answers"][0]["multiFactor"] is False
    assert result["Tell_the_SOC_it_was_not_the_user"].status == "Succeeded"
    assert clean_stack.graph.risky_user(ADELE)["riskState"] == "confirmedCompromised"
    assert clean_stack.graph.user(ADELE)["accountEnabled"] is True  # asking never disables: the SOC decides
    text = comments(clean_stack, incident)
    assert "User answered: No, it wasn&#x27;t me" in text or "User answered: No, it wasn't me" in text
    assert "Adele Vance (adele.vance@contoso.com, object id " + ADELE in text
    assert "confirmed compromised" in text
    assert any("NOT them" in str(m) for m in clean_stack.teams.messages)
    assert clean_stack.arm.incident(incident["object"]["id"])["properties"]["status"] != "Closed"


def test_yes_needs_a_fresh_multi_factor_sign_in_and_closes_nothing(clean_stack, host, incident):
    run = Started(host, PLAYBOOK, incident)
    link = question_link(clean_stack)
    clean_stack.graph.set_risk(ADELE, "atRisk", "medium")
    password_only = person(clean_stack, host.host.url, ADELE_UPN, mfa=False)
    refused = answer(password_only, link, "Yes")
    assert refused.status_code == 403 and "multi-factor" in refused.text
    with_mfa = person(clean_stack, host.host.url, ADELE_UPN, mfa=True)
    assert answer(with_mfa, link, "Yes").status_code == 200
    result = run.join()
    body = result["Ask_the_user"].body
    assert body["answer"] == "Yes" and body["answers"][0]["multiFactor"] is True
    assert result["Tell_the_SOC_it_was_not_the_user"].status == "Skipped"
    assert result["Tell_the_SOC_nobody_answered"].status == "Skipped"
    assert clean_stack.graph.risky_user(ADELE)["riskState"] == "atRisk"  # dismissing is off by default
    assert "with multi-factor authentication" in comments(clean_stack, incident)
    assert clean_stack.arm.incident(incident["object"]["id"])["properties"]["status"] != "Closed"
    assert answer(with_mfa, link, "No").status_code == 409  # answered: nothing changes any more


def test_only_the_user_asked_may_answer(clean_stack, host, incident, callbacks):
    url = callbacks.new_url()
    assert host.post(ROUTE, {"callbackUrl": url, "incident": incident}).status_code == 201
    link = question_link(clean_stack)
    for upn in ("alice@contoso.com", "mallory@contoso.com"):
        other = person(clean_stack, host.host.url, upn)
        page = other.get(link, timeout=30)
        assert page.status_code == 403 and "This question is for Adele Vance" in page.text
        assert other.post(link, data={"answer": "No"}, headers={"Origin": origin_of(link)},
                          timeout=30).status_code == 403
    forged = link.replace("sig=", "sig=x")
    assert person(clean_stack, host.host.url, ADELE_UPN).get(forged, timeout=30).status_code == 403
    time.sleep(0.3)
    assert callbacks.bodies(url) == [] and clean_stack.graph.risky_user(ADELE) is None


def test_nobody_answering_times_out_through_the_sweep_not_a_page_view(clean_stack, host, incident):
    run = Started(host, PLAYBOOK, incident, askTimeout="PT2S")
    link = question_link(clean_stack)
    adele = person(clean_stack, host.host.url, ADELE_UPN)
    time.sleep(2.2)
    assert adele.get(link, timeout=30).status_code == 410
    time.sleep(0.3)
    assert run.result is None  # a GET of the expired link changed nothing
    fired = requests.post(f"{host.host.url}/admin/functions/ask_user_sweep", json={},
                          headers={"x-functions-key": host.host.master_key}, timeout=30)
    assert fired.status_code == 202
    result = run.join()
    assert result["Ask_the_user"].body["answer"] == "TimedOut"
    assert result["Tell_the_SOC_nobody_answered"].status == "Succeeded"
    assert "User confirmation timed out" in comments(clean_stack, incident)


def test_protected_accounts_are_not_asked_and_dry_run_changes_nothing(clean_stack, host_with, incident, callbacks):
    protected = host_with(PROTECTED_ACCOUNTS="adele.vance@contoso.com")
    refused = protected.post(ROUTE, {"callbackUrl": callbacks.new_url(), "incident": incident})
    assert refused.status_code == 409 and "protected account" in refused.json()["error"]["message"]
    assert clean_stack.outbox.sent == []

    dry = host_with(DRY_RUN="true", ASK_USER_DISMISS_RISK_ON_YES="true")
    url = callbacks.new_url()
    assert dry.post(ROUTE, {"callbackUrl": url, "incident": incident}).json()["dryRun"] is True
    assert answer(person(clean_stack, dry.host.url, ADELE_UPN), question_link(clean_stack), "No").status_code == 200
    (callback,) = wait_for(lambda: callbacks.bodies(url))
    assert callback["answer"] == "No" and "would" in callback["answers"][0]["outcome"]
    assert clean_stack.graph.risky_user(ADELE) is None


def test_yes_dismisses_the_risk_when_configured(clean_stack, host_with, incident, callbacks):
    dismissing = host_with(ASK_USER_DISMISS_RISK_ON_YES="true")
    clean_stack.graph.set_risk(ADELE, "atRisk", "high")
    url = callbacks.new_url()
    assert dismissing.post(ROUTE, {"callbackUrl": url, "incident": incident}).status_code == 201
    assert answer(person(clean_stack, dismissing.host.url, ADELE_UPN), question_link(clean_stack), "Yes") \
        .status_code == 200
    (callback,) = wait_for(lambda: callbacks.bodies(url))
    assert callback["answer"] == "Yes" and callback["answers"][0]["outcome"] == "risk dismissed in Identity Protection"
    assert clean_stack.graph.risky_user(ADELE)["riskState"] == "dismissed"

