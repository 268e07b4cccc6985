"""``make audit``: known vulnerabilities in the runtime dependencies (requirements.txt and what they pull in).

pip-audit does this, but its vulnerability services may be out of reach from the build machine: PyPI's
per-version JSON API (``/pypi/<name>/<version>/json``, pip-audit's default) and OSV (api.osv.dev). So:

1. The pinned closure: every pin of requirements.txt and, from the installed .venv (importlib.metadata),
   every distribution they require, transitively, with markers evaluated.
2. When one of pip-audit's services answers, pip-audit audits exactly that closure (``--no-deps --disable-pip
   --strict``) and its verdict is the verdict.
3. Otherwise PyPI's project JSON (``/pypi/<name>/json``), which lists the vulnerabilities of the project's
   *latest* release only, is the best available source, and it is used for what it can decide:
   - our pin is the latest release: the list is the list for our version; any entry fails the audit;
   - our pin is behind: reported as "behind latest, not audited by this service". The list cannot clear an
     older version, nor convict it: a vulnerability of the latest release may or may not reach back to ours,
     and one fixed before the latest release is no longer listed. Entries are shown as undecided.
   A yanked pin is reported. ``--strict`` fails on anything not audited.
A service that cannot be reached fails the audit with a message: no answer is never a pass. Requests run in
parallel with timeouts, and the whole run has a deadline.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from packaging.requirements import Requirement
from packaging.version import InvalidVersion, Version

ROOT = Path(__file__).resolve().parents[1]
PYPI = "https://pypi.org/pypi"
OSV = "https://api.osv.dev/v1/query"
TIMEOUT = 10.0  # one request
DEADLINE = 90.0  # the whole fallback audit
WORKERS = 16
PIP_AUDIT_TIMEOUT = 600


def canonical(name: str) -> str:
    """PEP 503 name: how PyPI and pip-audit compare project names."""
    return re.sub(r"[-_.]+", "-", name).lower()


# -- 1. what we run --------------------------------------------------------------------------------------------
def pins(requirements: Path) -> dict[str, str]:
    """``name==version`` lines of a requirements file (anything looser is an error: the pack pins)."""
    found: dict[str, str] = {}
    for line in requirements.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        requirement = Requirement(line)
        exact = [spec.version for spec in requirement.specifier if spec.operator == "=="]
        if len(exact) != 1:
            raise SystemExit(f"audit: {requirement.name} is not pinned with == in {requirements.name}")
        found[canonical(requirement.name)] = exact[0]
    return found


def closure(top: dict[str, str], distribution: Callable[[str], Any] = metadata.distribution) -> dict[str, str]:
    """The pins and every installed distribution they require, transitively (name -> installed version)."""
    found: dict[str, str] = {}
    seen: set[tuple[str, frozenset[str]]] = set()  # a distribution is walked again for other extras
    todo: list[tuple[str, frozenset[str]]] = [(name, frozenset()) for name in top]
    while todo:
        name, extras = todo.pop()
        if (canonical(name), extras) in seen:
            continue
        seen.add((canonical(name), extras))
        try:
            dist = distribution(name)
        except metadata.PackageNotFoundError:
            raise SystemExit(f"audit: {name} is required but not installed in this environment "
                             "(run `make install`)") from None
        found[canonical(dist.metadata["Name"])] = dist.version
        for line in dist.requires or ():
            requirement = Requirement(line)
            if any(requirement.marker is None or requirement.marker.evaluate({"extra": extra})
                   for extra in ("", *extras)):
                todo.append((requirement.name, frozenset(requirement.extras)))
    return found


# -- 3. the decision on one project JSON -----------------------------------------------------------------------
@dataclass
class Finding:
    name: str
    version: str
    status: str  # audited | vulnerable | behind | ahead | unknown-version | error
    latest: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def known_vulnerable(self) -> bool:
        return self.status == "vulnerable"

    @property
    def audited(self) -> bool:
        return self.status in ("audited", "vulnerable")


def _describe(vulnerability: dict) -> str:
    names = [vulnerability.get("id") or "?", *(vulnerability.get("aliases") or [])]
    fixed = ", ".join(vulnerability.get("fixed_in") or []) or "no fix released"
    summary = (vulnerability.get("summary") or vulnerability.get("details") or "").strip().splitlines()
    return f"{' / '.join(names)} (fixed in: {fixed}){': ' + summary[0][:100] if summary else ''}"


def decide(name: str, version: str, project: dict) -> Finding:
    """What PyPI's project JSON says about ``name==version``: see the module docstring for what it can decide."""
    info = project.get("info") or {}
    releases = project.get("releases") or {}
    latest = str(info.get("version") or "")
    vulnerabilities = [v for v in project.get("vulnerabilities") or [] if not v.get("withdrawn")]
    try:
        ours, newest = Version(version), Version(latest)
    except InvalidVersion:
        return Finding(name, version, "error", latest, [f"cannot compare versions {version!r} and {latest!r}"])
    files = next((files for release, files in releases.items() if _same(release, ours)), None)
    if files is None and releases:
        return Finding(name, version, "unknown-version", latest, ["PyPI lists no such release"])
    finding = Finding(name, version, "audited", latest)
    if files and all(f.get("yanked") for f in files):
        reasons = {f.get("yanked_reason") or "no reason given" for f in files}
        finding.notes.append(f"yanked on PyPI: {'; '.join(sorted(reasons))}")
    if ours == newest:
        if vulnerabilities:
            finding.status = "vulnerable"
            finding.notes += [_describe(v) for v in vulnerabilities]
        return finding
    finding.status = "behind" if ours < newest else "ahead"
    finding.notes.append(f"{'behind' if ours < newest else 'ahead of'} latest ({version} "
                         f"{'<' if ours < newest else '>'} {latest}), not audited by this service")
    finding.notes += [f"undecided for {version}: latest {latest} is affected by {_describe(v)}"
                      for v in vulnerabilities]
    return finding


def _same(release: str, version: Version) -> bool:
    try:
        return Version(release) == version
    except InvalidVersion:
        return False


# -- network ---------------------------------------------------------------------------------------------------
def fetch_json(url: str, *, data: bytes | None = None, timeout: float = TIMEOUT, attempts: int = 2) -> Any:
    """GET (or POST ``data``) JSON; raises OSError with a short reason when there is no usable answer."""
    last: Exception | None = None
    for attempt in range(attempts):
        request = urllib.request.Request(url, data=data, headers={  # noqa: S310 - our own https URLs
            "Accept": "application/json", "Content-Type": "application/json",
            "User-Agent": "sentinel-playbooks-audit/1.0"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as answer:  # noqa: S310 - our own https URLs
                return json.load(answer)
        except urllib.error.HTTPError as error:
            if error.code < 500 and error.code != 429:
                raise OSError(f"HTTP {error.code}") from None
            last = error
        except (urllib.error.URLError, TimeoutError, ValueError, OSError) as error:
            last = error
        time.sleep(0.5 * (attempt + 1))
    reason = getattr(last, "reason", None) or last
    raise OSError(str(reason))


def answers(url: str, data: bytes | None = None) -> bool:
    try:
        fetch_json(url, data=data, attempts=1)
        return True
    except OSError:
        return False


# -- 2. pip-audit when its service answers ------------------------------------------------------------------------
def pip_audit_service(probe: tuple[str, str]) -> str | None:
    """The pip-audit service that answers from here, if any (PyPI's per-version API first, its default)."""
    name, version = probe
    if answers(f"{PYPI}/{name}/{version}/json"):
        return "pypi"
    if answers(OSV, json.dumps({"package": {"name": name, "ecosystem": "PyPI"}, "version": version}).encode()):
        return "osv"
    return None


def run_pip_audit(closure_pins: dict[str, str], service: str) -> int:
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as handle:
        handle.write("".join(f"{name}=={version}\n" for name, version in sorted(closure_pins.items())))
    command = [sys.executable, "-m", "pip_audit", "-r", handle.name, "--no-deps", "--disable-pip", "--strict",
               "--progress-spinner", "off", "--timeout", str(int(TIMEOUT)), "-s", service, "--desc", "off"]
    print(f"audit: pip-audit ({service}) over {len(closure_pins)} pinned distributions", flush=True)
    try:
        return subprocess.run(command, timeout=PIP_AUDIT_TIMEOUT, check=False).returncode  # noqa: S603
    except subprocess.TimeoutExpired:
        print(f"audit: FAILED: pip-audit did not finish within {PIP_AUDIT_TIMEOUT}s")
        return 1
    finally:
        Path(handle.name).unlink(missing_ok=True)


# -- 3. the fallback ---------------------------------------------------------------------------------------------
def audit_with_project_json(closure_pins: dict[str, str],
                            fetch: Callable[[str], Any] = lambda url: fetch_json(url)) -> list[Finding]:
    findings: list[Finding] = []
    started = time.monotonic()
    with ThreadPoolExecutor(WORKERS) as pool:
        futures = {pool.submit(fetch, f"{PYPI}/{name}/json"): (name, version)
                   for name, version in closure_pins.items()}
        try:
            for future in as_completed(futures, timeout=DEADLINE):
                name, version = futures[future]
                try:
                    findings.append(decide(name, version, future.result()))
                except OSError as error:
                    findings.append(Finding(name, version, "error", notes=[f"{PYPI}/{name}/json: {error}"]))
        except TimeoutError:
            pass
        for future, (name, version) in futures.items():
            if not future.done():
                future.cancel()
                findings.append(Finding(name, version, "error",
                                        notes=[f"no answer within the {DEADLINE:.0f}s deadline"]))
    print(f"audit: PyPI project JSON for {len(closure_pins)} distributions in {time.monotonic() - started:.1f}s")
    return sorted(findings, key=lambda f: f.name)


def report(findings: Iterable[Finding], top: dict[str, str], *, strict: bool) -> int:
    findings = list(findings)
    width = max((len(f.name) for f in findings), default=10) + 2
    for finding in findings:
        mark = "*" if finding.name in top else " "
        print(f"{mark} {finding.name:<{width}} {finding.version:<12} {finding.status:<16} latest {finding.latest}")
        for note in finding.notes:
            print(f"    {note}")
    counts: dict[str, int] = {}
    for finding in findings:
        counts[finding.status] = counts.get(finding.status, 0) + 1
    print("audit: " + ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
          + " (* = pinned in requirements.txt)")
    failed = [f for f in findings if f.known_vulnerable or f.status in ("error", "unknown-version")]
    if strict:
        failed += [f for f in findings if not f.audited and f not in failed]
    if failed:
        print("audit: FAILED: " + ", ".join(f"{f.name} {f.version} ({f.status})" for f in failed))
        return 1
    behind = [f for f in findings if f.status in ("behind", "ahead")]
    print(f"audit: no known vulnerability in the {sum(f.audited for f in findings)} pins that are PyPI's latest "
          f"release; {len(behind)} behind latest and not audited by this service (see above)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-r", "--requirements", type=Path, default=ROOT / "requirements.txt")
    parser.add_argument("--strict", action="store_true", help="fail on any distribution the service cannot audit")
    parser.add_argument("--fallback", action="store_true", help="skip pip-audit; use PyPI's project JSON")
    args = parser.parse_args(argv)
    top = pins(args.requirements)
    everything = closure(top)
    mismatched = [f"{name} {pinned} (installed {everything.get(name)})" for name, pinned in top.items()
                  if everything.get(name) != pinned]
    if mismatched:
        print("audit: FAILED: the environment does not match requirements.txt: " + ", ".join(mismatched))
        return 1
    service = None if args.fallback else pip_audit_service(next(iter(top.items())))
    if service:
        return run_pip_audit(everything, service)
    print("audit: pip-audit's services do not answer from here (PyPI per-version JSON, OSV); using PyPI's "
          "project JSON, which lists vulnerabilities of each project's latest release only")
    try:
        fetch_json(f"{PYPI}/pip/json", attempts=1)
    except OSError as error:
        print(f"audit: FAILED: PyPI cannot be reached ({error}); nothing was audited")
        return 1
    return report(audit_with_project_json(everything), top, strict=args.strict)


if __name__ == "__main__":
    sys.exit(main())
