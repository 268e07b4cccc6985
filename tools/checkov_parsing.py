"""``make checkov`` asserts that checkov parsed every template: 0 parsing errors, and Bicep resources were found.

checkov reports a template its Bicep parser (pycep, pinned in tools/checkov.txt) cannot read as a "parsing
error" and still exits 0, so a template written in newer syntax than the parser knows would silently go
unscanned. This reads checkov's JSON report and fails on any parsing error or on an empty Bicep scan.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def verdict(report: object) -> list[str]:
    reports = report if isinstance(report, list) else [report]
    problems, bicep_resources = [], 0
    for entry in reports:
        if not isinstance(entry, dict) or "summary" not in entry:
            continue
        summary = entry["summary"]
        if summary.get("parsing_errors"):
            problems.append(f"checkov could not parse {summary['parsing_errors']} {entry.get('check_type')} file(s): "
                            + ", ".join(entry.get("results", {}).get("parsing_errors", [])))
        if entry.get("check_type") == "bicep":
            bicep_resources = summary.get("resource_count", 0)
    if not bicep_resources:
        problems.append("checkov scanned no Bicep resource: infra/ was not parsed")
    return problems


def main(argv: list[str]) -> int:
    problems = verdict(json.loads(Path(argv[1]).read_text()))
    for problem in problems:
        print(problem, file=sys.stderr)
    if not problems:
        print("checkov: 0 parsing errors")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
