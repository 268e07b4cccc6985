"""Block (and unblock) what the enrichment rates: the incident's files, URLs and domains as Defender indicators.

block-ip's sibling for the other kinds the enrichment looks up (issue #18, item 6). What is blocked, exactly:
- a file by one indicator, of its SHA-256 when the entity carries one, else its SHA-1, else its MD5
  (``FileSha256`` / ``FileSha1`` / ``FileMd5``), action ``BlockAndRemediate`` ("the alert and block response
  was renamed to block and remediate": Learn, "Overview of indicators", which lists it for files only);
- a URL by a ``Url`` indicator of the URL *as the enrichment looked it up*: without userinfo, query and fragment
  (``core.verdicts.clean_url``), so no token or signature leaves the tenant; only http and https (Defender's
  network protection blocks "HTTP URLs (including a full URL path)" and HTTPS by host: Learn, "Create
  indicators for IPs and URLs/domains"). A URL indicator "will match resources under the path";
- a domain by a ``DomainName`` indicator, which "will match example.com as well as sub.example.com"; action
  ``Block`` for both.

Guardrails, as block-ip's, in this order:
1. never blocked: internal domains (``INTERNAL_DOMAINS`` and the tenant's verified domains:
   core/internal_domains.py, the enrichment's rule), URLs on them or on a private address, and
   ``PROTECTED_INDICATORS`` (exact values or fnmatch patterns of domains, URLs and hashes);
2. the verdict filter: the latest VirusTotal verdict the enrichment cached for the value (core/verdicts.py; a URL
   without its own falls back to its host's, which is all ``VIRUSTOTAL_URL_LOOKUP=domain`` looks up) must be one
   of ``BLOCK_INDICATOR_VERDICTS`` (default malicious; ``none`` also lets values never looked up through);
3. the leases and the incident's blast-radius budget of ``block-indicators`` (one budget across the three
   kinds: ``RESPONSE_MAX_TARGETS`` distinct values per incident), ``DRY_RUN`` / ``?dryRun=true``,
   ``DISABLED_ACTIONS`` (``block_indicators``, ``unblock_indicators``), and one audit comment per call.

Read before write: the Defender indicators of the value (and of the file's other hashes; of the domain's parent
domains, and a URL's host and its parents) are read side by side. An ``Allowed`` indicator among them wins: a
SOC exclusion is never overridden (for files Defender itself would let a block beat an allow). Another decision
on the exact value (``Warn``, ``Audit``) is not overwritten either (the submit would replace it). A block that
already lasts at least as long is kept (``already``); the pack's own shorter block is renewed, someone else's is
left as its owner set it. Otherwise one write creates every indicator of the call (response/indicators.py).
Seeing the SOC's indicators needs ``Ti.ReadWrite.All`` (docs/permissions.md).

Unblock deletes the pack's own blocking indicators of each value (``response.indicators.ours``) and no one
else's: a block the pack did not create is reported, not removed.
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from fnmatch import fnmatchcase
from urllib.parse import urlsplit

from core.case import Case
from core.context import Context
from core.errors import PackError
from core.internal_domains import InternalDomains, from_settings
from core.verdicts import KnownVerdict, cache_key, clean_url, latest_verdicts
from response.indicators import (
    ALLOWED,
    BLOCKING,
    RENEW_SLACK_SECONDS,
    Block,
    active,
    body,
    expiry,
    iso,
    ours,
    until_text,
    write,
)
from response.ipblock import not_blockable
from response.mde import INDICATOR_TYPES, DefenderClient, DefenderRejected
from response.run import ResponseRun

log = logging.getLogger(__name__)

KINDS = ("filehash", "file", "url", "dnsresolution")  # the entity kinds (Case.skipped) this action acts on
ACTIONS = {"file": "BlockAndRemediate", "url": "Block", "domain": "Block"}
WHAT = {"file": "file", "url": "URL", "domain": "domain"}
URL_SCHEMES = ("http", "https")
NO_VERDICT = "none"  # the word of BLOCK_INDICATOR_VERDICTS for "never looked up"
MAX_PARENTS = 4  # parent domains read for an allow that covers the value (a.b.c.evil.example: 3 of them)


@dataclass(frozen=True)
class Target:
    """One value to block, and the Defender indicators to read before writing it (the exact one first)."""

    kind: str  # file | url | domain
    value: str
    indicator_type: str
    label: str  # how rows name it (a file by its name and hash)
    reads: tuple[tuple[str, str], ...]  # (value, indicatorType)
    host: str | None = None  # a URL's host (its verdict stands in for the URL's own)
    verdict: KnownVerdict | None = field(default=None, compare=False)

    @property
    def key(self) -> str:
        """Its lease and blast-radius key (a URL by its hash: Table keys cannot hold every URL character)."""
        return cache_key(self.kind, self.value)

    @property
    def data(self) -> dict:
        return {"kind": self.kind, "indicatorType": self.indicator_type, "value": self.value}


def parents(domain: str) -> list[str]:
    """``a.b.evil.example`` -> [``b.evil.example``, ``evil.example``]: the names whose indicator covers it."""
    labels = domain.split(".")
    return [".".join(labels[i:]) for i in range(1, len(labels) - 1)][:MAX_PARENTS]


class IndicatorResponse:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.mde = DefenderClient(ctx.session, ctx.tokens, str(ctx.settings["MDE_ENDPOINT"]))
        self.hours = int(ctx.settings["BLOCK_INDICATOR_EXPIRY_HOURS"])  # type: ignore[arg-type]
        self.verdicts = frozenset(ctx.settings["BLOCK_INDICATOR_VERDICTS"] or ())  # type: ignore[arg-type]
        self.protected = frozenset(ctx.settings["PROTECTED_INDICATORS"] or ())  # type: ignore[arg-type]

    def block(self, case: Case, *, dry_run: bool = False) -> dict:
        return self._run(case, "block-indicators", "Block files, URLs and domains (Defender for Endpoint indicators)",
                         dry_run)

    def unblock(self, case: Case, *, dry_run: bool = False) -> dict:
        return self._run(case, "unblock-indicators", "Unblock files, URLs and domains (Defender for Endpoint "
                                                     "indicators)", dry_run)

    # -- one call -----------------------------------------------------------------------------
    def _run(self, case: Case, action: str, title: str, dry_run: bool) -> dict:
        run = ResponseRun(self.ctx, case, action=action, title=title, dry_run_requested=dry_run)
        blocking = action == "block-indicators"
        candidates = self._candidates(run)
        run.subjects = [t.key for t in candidates] + [e.target for e in run.entries]  # + URLs refused already
        run.skip(*KINDS)
        run.require("file hash, URL or domain", candidates)
        expires = datetime.now(UTC) + timedelta(hours=self.hours)
        error: PackError | None = None
        try:
            targets = self._guarded(run, candidates) if blocking else candidates
            run.take("indicator", [t.key for t in targets], what="indicators")
            found = self._read(run, targets, blocking)
            if blocking:
                self._block(run, targets, found, expires)
            else:
                self._unblock(run, targets, found)
        except PackError as exc:
            error = exc
        return run.close(error, expiresAt=iso(expires) if blocking else None)

    def _candidates(self, run: ResponseRun) -> list[Target]:
        """Every file, URL and domain of the case as the value Defender would hold (a URL cleaned), deduplicated;
        a URL Defender cannot block (not http or https) is refused here, before anything is read."""
        targets: dict[str, Target] = {}
        for file in run.case.files:
            algorithm = "sha256" if file.sha256 else "sha1" if file.sha1 else "md5"
            reads = tuple((h, INDICATOR_TYPES[a]) for a, h in (("sha256", file.sha256), ("sha1", file.sha1),
                                                                 ("md5", file.md5)) if h)
            label = f"{file.name} ({file.value})" if file.name else file.value
            targets.setdefault(f"file:{file.value}", Target("file", file.value, INDICATOR_TYPES[algorithm], label,
                                                            reads))
        for url in run.case.urls:
            cleaned = clean_url(url.url)
            parts = urlsplit(cleaned)
            host = _ascii((parts.hostname or "").rstrip("."))
            if parts.scheme not in URL_SCHEMES:
                run.refuse(cleaned, f"a {parts.scheme} URL: Defender URL indicators block http and https",
                           kind="url")
                continue
            if len(cleaned) > 2048:
                run.refuse(cleaned[:200] + "…", "a URL over 2,048 characters: not sent to Defender", kind="url")
                continue
            names = () if _address(host) else (host, *parents(host))
            reads = ((cleaned, "Url"), *((name, "DomainName") for name in names))
            targets.setdefault(f"url:{cleaned}", Target("url", cleaned, "Url", cleaned, reads, host=host))
        for domain in run.case.domains:
            name = domain.domain
            reads = tuple((d, "DomainName") for d in (name, *parents(name)))
            targets.setdefault(f"domain:{name}", Target("domain", name, "DomainName", name, reads))
        return list(targets.values())

    def _guarded(self, run: ResponseRun, candidates: list[Target]) -> list[Target]:
        """The targets a block may touch: not internal, not protected, and rated as BLOCK_INDICATOR_VERDICTS says."""
        internal: InternalDomains | None = None
        kept: list[Target] = []
        for target in candidates:
            reason = self._protected(target)
            if reason is None and target.kind in ("url", "domain"):
                name = target.host if target.kind == "url" else target.value
                assert name is not None
                address = _address(name)
                if address is not None:
                    why = not_blockable(address)
                    reason = f"on {address}: {why}" if why else None
                else:
                    internal = internal or from_settings(self.ctx.settings, self.ctx.session, self.ctx.tokens)
                    why = internal.reason(name)
                    reason = f"{why}: never blocked" if why else None
            if reason:
                run.refuse(target.label, reason, **target.data)
            else:
                kept.append(target)
        return self._rated(run, kept)

    def _protected(self, target: Target) -> str | None:
        values = [v for v, _ in target.reads] if target.kind == "file" else [target.value]
        for rule in sorted(self.protected):
            if any(fnmatchcase(value.lower(), rule) for value in values):
                return f"protected (PROTECTED_INDICATORS entry {rule!r})"
        return None

    def _rated(self, run: ResponseRun, targets: list[Target]) -> list[Target]:
        """The targets whose latest VirusTotal verdict is one of BLOCK_INDICATOR_VERDICTS (read in one batch)."""
        wanted = [(t.kind, t.value) for t in targets] + [("domain", t.host) for t in targets if t.host]
        known = latest_verdicts(self.ctx.state, [(k, v) for k, v in wanted if v],
                                int(self.ctx.settings["RESPONSE_POOL_SIZE"]))  # type: ignore[arg-type]
        kept = []
        allowed = ", ".join(sorted(self.verdicts)) or "no"
        for target in targets:
            verdict = known.get((target.kind, target.value))
            via = ""
            if verdict is None and target.host:
                verdict, via = known.get(("domain", target.host)), f" (of its host {target.host})"
            if verdict is None:
                if NO_VERDICT in self.verdicts:
                    kept.append(target)
                else:
                    run.refuse(target.label, "no VirusTotal verdict yet: run the enrichment first, or add none to "
                                             "BLOCK_INDICATOR_VERDICTS", **target.data)
            elif verdict.verdict in self.verdicts:
                kept.append(Target(target.kind, target.value, target.indicator_type, target.label, target.reads,
                                   target.host, verdict))
            else:
                run.refuse(target.label, f"VirusTotal {verdict.describe()}{via}, {verdict.age()} old; only {allowed} "
                                         "verdicts are blocked (BLOCK_INDICATOR_VERDICTS)", **target.data)
        return kept

    def _read(self, run: ResponseRun, targets: list[Target], blocking: bool) -> dict[tuple[str, str], list[dict]]:
        """The Defender indicators of every (value, type) the targets name, side by side (one list call each:
        Defender's OData has no documented ``or``). Unblock reads only the exact values."""
        pairs = list(dict.fromkeys(pair for t in targets for pair in (t.reads if blocking else t.reads[:1])))
        lists = run.each(pairs, lambda pair: self.mde.indicators_for(*pair))
        return dict(zip(pairs, lists, strict=True))

    # -- block ----------------------------------------------------------------------------------
    def _block(self, run: ResponseRun, targets: list[Target], found: dict[tuple[str, str], list[dict]],
               expires: datetime) -> None:
        now = datetime.now(UTC)
        plans: dict[Target, str] = {}  # target -> "created" | "renewed"
        outcome: dict[Target, tuple] = {}
        for target in targets:
            exact = found[target.reads[0]]
            related = [i for pair in target.reads[1:] for i in found[pair]]
            decided = self._decide(target, exact, related, now, expires)
            if isinstance(decided, tuple):
                outcome[target] = decided
            elif run.read_only:
                outcome[target] = ("would", f"Defender indicator {target.indicator_type} {ACTIONS[target.kind]} "
                                            f"until {iso(expires)} ({self._why(target)})", [])
            else:
                plans[target] = decided
        written = write(self.mde, [body(run.case, Block(t.value, t.indicator_type, ACTIONS[t.kind], expires,
                                                        WHAT[t.kind])) for t in plans])
        for target, verb in plans.items():
            result = written.get(target.value.lower())
            if isinstance(result, DefenderRejected) or result is None:
                outcome[target] = ("failed", result or DefenderRejected(f"Defender gave no result for {target.label}"))
            else:
                outcome[target] = ("done", f"blocked until {iso(expires)} (indicator {verb}; {self._why(target)})",
                                   [str(result.get("id", ""))])
        for target in targets:
            kind, *rest = outcome[target]
            if kind == "failed":
                run.failed(target.label, rest[0], **target.data)
            else:
                run.add(target.label, kind, rest[0], rest[1], **target.data)

    @staticmethod
    def _decide(target: Target, exact: list[dict], related: list[dict], now: datetime,
                expires: datetime) -> tuple | str:
        """An outcome (``(outcome, detail, ids)``) when nothing is to be written, else ``created`` / ``renewed``."""
        for indicator in exact + related:
            if indicator.get("action") == ALLOWED and active(indicator, now):
                return ("refused", f"Defender indicator {indicator.get('id')} allows {indicator.get('indicatorValue')} "
                                   f"({indicator.get('indicatorType')}): a SOC exclusion wins, not blocked",
                        [str(indicator.get("id", ""))])
        for indicator in exact:
            if indicator.get("action") not in BLOCKING and active(indicator, now):
                return ("refused", f"Defender indicator {indicator.get('id')} ({indicator.get('action')}) is set for "
                                   "this value: the pack does not overwrite another decision (a submit replaces the "
                                   "indicator of the same value); change it in the portal", [str(indicator.get("id"))])
        files = related if target.kind == "file" else []  # another hash of the same file blocks it too
        blocks = [i for i in exact + files if i.get("action") in BLOCKING and active(i, now)]
        if blocks:
            best = max(blocks, key=lambda i: expiry(i) or datetime.max.replace(tzinfo=UTC))
            until = expiry(best)
            whose = "" if ours(best) else ", which the pack did not create"
            if until is None or until >= expires - timedelta(seconds=RENEW_SLACK_SECONDS):
                return ("already", f"blocked until {until_text(best)} (Defender indicator {best.get('id')}"
                                   f"{whose})", [str(best.get("id", ""))])
            mine = [i for i in exact if i.get("action") in BLOCKING and active(i, now)]
            if not any(ours(i) for i in mine) and mine:
                return ("already", f"blocked until {until_text(best)} by Defender indicator {best.get('id')}, which "
                                   "the pack did not create: left as its owner set it", [str(best.get("id", ""))])
            if any(ours(i) for i in mine):
                return "renewed"
        return "created"

    @staticmethod
    def _why(target: Target) -> str:
        verdict = target.verdict
        if verdict is None:
            return "no VirusTotal verdict (BLOCK_INDICATOR_VERDICTS lets none through)"
        via = f" of its host {target.host}" if verdict.kind == "domain" and target.kind == "url" else ""
        return f"VirusTotal {verdict.describe()}{via}, {verdict.age()} old"

    # -- unblock --------------------------------------------------------------------------------
    def _unblock(self, run: ResponseRun, targets: list[Target], found: dict[tuple[str, str], list[dict]]) -> None:
        now = datetime.now(UTC)
        mine = {t: [i for i in found[t.reads[0]] if i.get("action") in BLOCKING and ours(i)] for t in targets}
        others = {t: [i for i in found[t.reads[0]] if i.get("action") in BLOCKING and not ours(i) and active(i, now)]
                  for t in targets}
        if not run.read_only:
            run.each([str(i.get("id")) for t in targets for i in mine[t]], self.mde.delete_indicator)
        for target in targets:
            ids = [str(i.get("id")) for i in mine[target]]
            foreign = ", ".join(str(i.get("id")) for i in others[target])
            still = f"; still blocked by Defender indicator {foreign}, which the pack did not create" if foreign else ""
            if ids and run.read_only:
                run.add(target.label, "would", f"delete the pack's Defender indicator(s){still}", ids, **target.data)
            elif ids:
                run.add(target.label, "done", f"unblocked: {len(ids)} indicator(s) deleted{still}", ids, **target.data)
            elif foreign:
                run.refuse(target.label, f"blocked by Defender indicator {foreign}, which the pack did not create: not "
                                         "removed (remove it in the portal if the block is wrong)", **target.data)
            else:
                run.add(target.label, "already", "not blocked (no blocking Defender indicator for this value)",
                        **target.data)


def _ascii(host: str) -> str:
    """A host name in its ASCII (IDNA) form, as internal domains and DomainName indicators name it."""
    if _address(host) is not None:
        return host
    try:
        return host.encode("idna").decode("ascii")
    except UnicodeError:
        return host


def _address(host: str) -> str | None:
    """The host as an IP address (the compressed form), or None for a name."""
    try:
        return ipaddress.ip_address(host.strip("[]")).compressed
    except ValueError:
        return None


__all__ = ["ACTIONS", "KINDS", "IndicatorResponse", "Target", "parents"]
