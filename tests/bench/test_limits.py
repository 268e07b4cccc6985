"""The bench's yardsticks: the limit of each action, the reference, and how a latency row is judged."""

from __future__ import annotations

import pytest

from bench import limits
from bench.common import timed_row
from bench.logicapp import definition
from localdev.latency import PROFILES

REAL = PROFILES["real"]


@pytest.mark.parametrize(("ips", "seconds"), [(1, 0.45), (16, 0.45), (17, 0.75), (50, 1.35), (200, 4.05)])
def test_new_ips_cost_one_look_up_round_per_pool(ips, seconds):
    assert limits.enrichment(ips, 16).seconds(REAL) == pytest.approx(seconds)


def test_cached_ips_cost_a_cache_read_and_the_comment():
    chain = limits.enrichment(50, 16, cached=True)
    assert chain.seconds(REAL) == pytest.approx(0.15) and chain.describe() == "storage + sentinel-arm"


def test_more_rounds_than_the_reference_are_said_in_the_row():
    """With 16 look-ups at a time, 50 and 200 new IPs take more VirusTotal rounds than the reference's 20 at a time:
    the row's chain says so; at 20 (or for fewer IPs than a round) it says nothing more."""
    assert "take 4 VirusTotal rounds where the reference's For each, 20 at a time, takes 3" in \
        limits.enrichment(50, 16).describe()
    assert "takes 10" in limits.enrichment(200, 16).describe()
    for chain in (limits.enrichment(10, 16), limits.enrichment(50, 20), limits.enrichment(200, 20)):
        assert "(" not in chain.describe()


def test_a_smaller_pool_lengthens_the_chain():
    assert limits.enrichment(50, 4).seconds(REAL) == pytest.approx(0.05 + 13 * 0.3 + 0.1)
    assert limits.isolate(5, 1).seconds(REAL) > limits.isolate(5, 16).seconds(REAL)


def test_side_by_side_calls_cost_the_slowest():
    assert limits.notify().seconds(REAL) == pytest.approx(0.2)
    assert limits.notify().seconds({**REAL, "slack-webhook": 0.4}) == pytest.approx(0.5)
    assert "(teams-webhook | slack-webhook)" in limits.notify().describe()


def test_the_reference_runs_twenty_iterations_at_a_time():
    assert limits.reference(20).seconds(REAL) == pytest.approx(0.4)
    assert limits.reference(50).seconds(REAL) == pytest.approx(1.2)


def test_every_chain_says_why_each_step_is_there():
    for chain in (limits.enrichment(3), limits.isolate(5), limits.notify(), limits.sync_create(), limits.close(),
                  limits.poll(0, 100), limits.poll(10, 100)):
        assert chain.reasons() and all(": " in reason for reason in chain.reasons())


def test_a_row_meets_its_goals_only_within_all_of_them():
    chain = limits.enrichment(50, 16)  # 1.35 s; 1.3x = 1.755 s
    met = timed_row("x", [1.7, 1.6, 1.75], chain, REAL, reference=2.5, absolute=2.0)
    assert met["met"] and met["value"] == 1.7 and met["ratio"] == pytest.approx(1.26, abs=0.01)
    slow = timed_row("x", [1.8, 1.9, 1.8], chain, REAL, reference=2.5, absolute=2.0)
    assert not slow["met"] and "its limit" in slow["problems"][0]
    beaten = timed_row("x", [1.5], chain, REAL, reference=1.2)
    assert not beaten["met"] and "reference" in beaten["problems"][0]
    over = timed_row("x", [2.1], limits.enrichment(200, 16), REAL, absolute=2.0)
    assert not over["met"] and over["problems"] == ["over 2 s (2.10 s)"]


def test_the_bench_calls_with_the_deployed_retry_policy():
    (action,) = definition("orchestration/notify")["actions"].values()
    assert action["inputs"]["uri"].endswith("/api/orchestration/notify")
    assert action["inputs"]["retryPolicy"]["type"] == "exponential" and action["inputs"]["retryPolicy"]["count"] == 4
