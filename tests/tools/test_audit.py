"""tools/audit.py decides on canned PyPI project JSON: what it may call audited, vulnerable or undecided."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from tools.audit import Finding, audit_with_project_json, closure, decide, pins, report

VULN = {"id": "PYSEC-2026-1", "aliases": ["CVE-2026-0001"], "fixed_in": ["2.9.0"], "summary": "header injection",
        "withdrawn": None}


def project(latest: str, releases: dict[str, bool] | None = None, vulnerabilities: list | None = None) -> dict:
    """A project JSON: ``releases`` maps version -> yanked."""
    releases = releases if releases is not None else {latest: False}
    files = {v: [{"yanked": y, "yanked_reason": "broken wheel" if y else None}] for v, y in releases.items()}
    return {"info": {"version": latest}, "releases": files, "vulnerabilities": vulnerabilities or []}


def test_latest_release_without_vulnerabilities_is_audited():
    finding = decide("requests", "2.34.2", project("2.34.2", {"2.9.0": False, "2.34.2": False}))
    assert finding.status == "audited" and finding.audited and not finding.known_vulnerable


def test_latest_release_with_a_vulnerability_fails():
    finding = decide("urllib3", "2.8.0", project("2.8.0", vulnerabilities=[VULN]))
    assert finding.status == "vulnerable" and finding.known_vulnerable
    assert "PYSEC-2026-1 / CVE-2026-0001 (fixed in: 2.9.0): header injection" in finding.notes[0]


def test_withdrawn_vulnerabilities_do_not_count():
    withdrawn = {**VULN, "withdrawn": "2026-02-01T00:00:00Z"}
    assert decide("urllib3", "2.8.0", project("2.8.0", vulnerabilities=[withdrawn])).status == "audited"


def test_version_order_is_pep440_not_text():
    # "2.10.0" sorts before "2.9.0" as text; 1.0.0 is behind 1.0.1 and the pre-release behind its final.
    assert decide("x", "2.10.0", project("2.10.0", {"2.9.0": False, "2.10.0": False})).status == "audited"
    assert decide("x", "0.66b1", project("0.66b2", {"0.66b1": False, "0.66b2": False})).status == "behind"
    assert decide("x", "1.0", project("1.0.0")).status == "audited"  # the same version, spelled differently


def test_behind_latest_is_not_audited_and_its_vulnerabilities_are_undecided():
    finding = decide("oauthlib", "3.3.1", project("4.0.1", {"3.3.1": False, "4.0.1": False}, [VULN]))
    assert finding.status == "behind" and not finding.audited and not finding.known_vulnerable
    assert finding.notes[0] == "behind latest (3.3.1 < 4.0.1), not audited by this service"
    assert finding.notes[1].startswith("undecided for 3.3.1: latest 4.0.1 is affected by PYSEC-2026-1")


def test_ahead_unknown_and_yanked_pins_are_reported():
    assert decide("x", "2.0.0rc1", project("1.9.0", {"1.9.0": False, "2.0.0rc1": False})).status == "ahead"
    assert decide("x", "9.9.9", project("1.0.0")).status == "unknown-version"
    yanked = decide("x", "1.0.0", project("1.0.1", {"1.0.0": True, "1.0.1": False}))
    assert "yanked on PyPI: broken wheel" in yanked.notes


@pytest.mark.parametrize(("statuses", "strict", "code"), [
    (["audited", "behind", "ahead"], False, 0),
    (["audited", "behind"], True, 1),
    (["audited", "vulnerable"], False, 1),
    (["audited", "error"], False, 1),
    (["unknown-version"], False, 1),
    (["audited"], True, 0),
])
def test_exit_code(statuses, strict, code, capsys):
    findings = [Finding(f"p{i}", "1.0", status, "1.0") for i, status in enumerate(statuses)]
    assert report(findings, {"p0": "1.0"}, strict=strict) == code
    out = capsys.readouterr().out
    assert ("FAILED" in out) == bool(code)


def test_network_failure_is_an_error_never_a_pass(capsys):
    def down(url: str):
        raise OSError("Name or service not known")

    findings = audit_with_project_json({"requests": "2.34.2"}, fetch=down)
    assert [f.status for f in findings] == ["error"] and "Name or service not known" in findings[0].notes[0]
    assert report(findings, {"requests": "2.34.2"}, strict=False) == 1


def test_closure_follows_markers_and_extras():
    dists = {
        # withextra is reached both plain (through lib) and with its extra: opt comes with the extra only.
        "app": ["lib>=1", "winonly; sys_platform == 'win32'", "opt; extra == 'fast'", "withextra[fast]"],
        "lib": ["withextra"], "withextra": ["opt; extra == 'fast'", "plain"], "opt": [], "plain": [], "winonly": [],
    }

    def distribution(name: str):
        return SimpleNamespace(metadata={"Name": name}, version="1.0", requires=dists[name])

    assert sorted(closure({"app": "1.0"}, distribution)) == ["app", "lib", "opt", "plain", "withextra"]


def test_requirements_must_be_pinned(tmp_path):
    good = tmp_path / "good.txt"
    good.write_text("# runtime\nRequests==2.34.2\nazure_functions==1.26.0  # comment\n")
    assert pins(good) == {"requests": "2.34.2", "azure-functions": "1.26.0"}
    loose = tmp_path / "loose.txt"
    loose.write_text("requests>=2\n")
    with pytest.raises(SystemExit, match="not pinned"):
        pins(loose)
