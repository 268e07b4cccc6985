"""README's settings table, generated from core/settings.py (issue 17.13): ``python -m tools.settings_table``.

It also adds any setting local.settings.sample.json lacks (with its default), so ``func start`` users see
every setting.

The table sits between the markers below in README.md; this rewrites it in place, and
tests/infra/test_docs.py fails while it is out of step with ``core.settings.SPECS``. A new setting needs
nothing here: add it to SPECS, run this, commit README.md.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from core.settings import SPECS, SettingSpec

README = Path(__file__).resolve().parents[1] / "README.md"
SAMPLE = README.parent / "local.settings.sample.json"
BEGIN, END = "<!-- settings:begin (python -m tools.settings_table) -->", "<!-- settings:end -->"


def _default(spec: SettingSpec) -> str:
    if spec.default is None:
        return ""
    return f"`{spec.default}`" if spec.default != "" else "(empty)"


def render() -> str:
    rows = ["| setting | default | secret | what |", "|---|---|---|---|"]
    for spec in SPECS:
        secret = "yes (Key Vault)" if spec.secret else ""
        rows.append(f"| `{spec.name}` | {_default(spec)} | {secret} | {spec.doc.replace('|', '/')} |")
    return "\n".join(rows)


def updated(text: str) -> str:
    if BEGIN not in text or END not in text:
        raise SystemExit(f"README.md has no {BEGIN} ... {END} block")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{render()}\n{END}{tail}"


def update_sample() -> list[str]:
    """Add the settings local.settings.sample.json lacks; return their names."""
    sample = json.loads(SAMPLE.read_text(encoding="utf-8"))
    added = [spec.name for spec in SPECS if spec.name not in sample["Values"]]
    for spec in SPECS:
        sample["Values"].setdefault(spec.name, spec.default or "")
    if added:
        SAMPLE.write_text(json.dumps(sample, indent=2) + "\n", encoding="utf-8")
    return added


def main() -> int:
    added = update_sample()
    if added:
        print(f"local.settings.sample.json: added {', '.join(added)}")
    text = README.read_text(encoding="utf-8")
    new = updated(text)
    if new != text:
        README.write_text(new, encoding="utf-8")
        print(f"README.md: settings table rewritten ({len(SPECS)} settings)")
    else:
        print(f"README.md: settings table up to date ({len(SPECS)} settings)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
