"""What every bench scenario shares: the result row, percentiles and a keyed HTTP caller."""

from __future__ import annotations

import math
import sys
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
