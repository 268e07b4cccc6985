"""README's bench section is what bench/results.json says (python -m bench.readme regenerates it)."""

from __future__ import annotations

import json

from bench.readme import README, RESULTS, render


def test_readme_bench_section_matches_results_json():
    results = json.loads(RESULTS.read_text())
    readme = README.read_text()
    assert render(readme, results) == readme, "run: python -m bench.readme"


def test_every_latency_row_names_its_limit_and_chain():
    rows = json.loads(RESULTS.read_text())["rows"]
    timed = [r for r in rows if r.get("kind") == "latency"]
    assert timed, "results.json has no latency rows: run make bench"
    for r in timed:
        assert r["limit"] > 0 and r["chain"] and r["samples"] and isinstance(r["met"], bool)
