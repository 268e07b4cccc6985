"""What every bench scenario shares: result rows, percentiles, a keyed HTTP caller, the latency switch."""

from __future__ import annotations

import math
import os
import statistics
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def row(scenario: str, metric: str, value: float, reference: float | None, goal: str = "") -> dict:
    """One line of the table and of bench/results.json; ``ratio`` = value / reference."""
    reference = round(reference, 3) if isinstance(reference, float) else reference
    ratio = round(value / reference, 3) if reference else None
    return {"scenario": scenario, "metric": metric, "value": round(value, 3), "reference": reference,
            "ratio": ratio, "goal": goal}


RATIO_GOAL = 1.3  # issue #16: every action <= 1.3x its longest chain given its pool size


def timed_row(scenario: str, samples: list[float], chain, profile: dict[str, float], *,
              reference: float | None = None, absolute: float | None = None, note: str = "") -> dict:
    """A latency row: the median of ``samples`` (seconds) beside the chain's limit and the reference.

    ``met`` is True when the median is <= 1.3x the limit, never slower than the reference and within the
    absolute bound (when given); ``problems`` says which of those it missed.
    """
    median = statistics.median(samples)
    limit = chain.seconds(profile)
    goals = [f"<= {RATIO_GOAL:g}x limit"]
    problems = []
    if median > RATIO_GOAL * limit:
        problems.append(f"{median / limit:.1f}x its limit ({median:.2f} s vs {limit:.2f} s: {chain.describe()})")
    if reference is not None:
        goals.append("<= reference")
        if median > reference:
            why = " (even the limit is: the reference reads no cache and checks nothing)" if limit > reference else ""
            problems.append(f"slower than the Logic-App-only reference ({median:.2f} s vs {reference:.2f} s){why}")
    if absolute is not None:
        goals.append(f"<= {absolute:g} s")
        if median > absolute:
            problems.append(f"over {absolute:g} s ({median:.2f} s)")
    return {"kind": "latency", "scenario": scenario, "metric": "median (s)", "value": round(median, 3),
            "samples": [round(s, 3) for s in samples], "limit": round(limit, 3), "chain": chain.describe(),
            "ratio": round(median / limit, 2) if limit else None,
            "reference": None if reference is None else round(reference, 3),
            "goal": ", ".join(goals), "met": not problems, "problems": problems, "note": note,
            "load": round(os.getloadavg()[0], 1)}


@contextmanager
def latency_off(stack) -> Iterator[None]:
    """Set-up work inside runs at loopback speed; the stack's profile applies again after."""
    stack.set_latency({})
    try:
        yield
    finally:
        stack.set_latency(stack.latency or {})


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (no interpolation: every reported figure was really measured)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


class Caller:
    """Calls the local host the way a Logic App HTTP action does (function key header)."""

    def __init__(self, host) -> None:
        self.host = host
        self.http = requests.Session()
        adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=256)
        self.http.mount("http://", adapter)

    def post(self, route: str, body: Any, timeout: float = 120) -> requests.Response:
        return self.http.post(f"{self.host.url}/api/{route}", json=body,
                              headers={"x-functions-key": self.host.function_key}, timeout=timeout)

    def get(self, route: str, timeout: float = 60) -> requests.Response:
        return self.http.get(f"{self.host.url}/api/{route}", headers={"x-functions-key": self.host.function_key},
                             timeout=timeout)
