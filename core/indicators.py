"""Indicator entities of a Case: files (by hash), URLs and DNS domains, parsed and checked once.

Sentinel names them in entity kinds (``EntityInnerKind`` of the 2025-09-01 spec): ``FileHash``
(``algorithm``, ``hashValue``), ``File`` (``fileName``, ``fileHashEntityIds``; alert format ``Name`` and
``FileHashes`` of ``$ref`` or inline ``{Algorithm, Value}``), ``Url`` (``url``) and ``DnsResolution``
(``domainName``). The types are deliberately plain, so every action can use them (enrichment looks them up;
blocking them as Defender indicators needs exactly these values):

- ``FileHashEntity``: one file, as the hashes that name it. A File entity with several hashes, and the
  FileHash entities it points to, are one file (one indicator); ``value`` is the SHA-256 when present, else
  the SHA-1, else the MD5 (VirusTotal and Defender accept each).
- ``UrlEntity``: the URL as received (trimmed). What may leave the tenant (no userinfo, no query) is the
  caller's decision: enrichment/indicators.py strips them before any look-up.
- ``DomainEntity``: a DNS name in lower-case ASCII (IDNA), without a trailing dot.

A value that cannot be one (a hash of the wrong length or not hex, an Authenticode hash, a URL that does
not parse, a domain with invalid labels) is reported as a skipped entity with its reason, never dropped
and never looked up. Host ``dnsDomain`` and UPN suffixes are never domains here: they name the tenant's
own machines and users.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

HASH_LENGTHS = {32: "md5", 40: "sha1", 64: "sha256"}
_HEX = re.compile(r"^[0-9a-f]+$")
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
URL_SCHEMES = ("http", "https", "ftp")


@dataclass(frozen=True)
class FileHashEntity:
    """A file named by its hashes (lower-case hex); at least one is set."""

    sha256: str | None = None
    sha1: str | None = None
    md5: str | None = None
    name: str | None = None  # the file name, when a File entity gave one

    @property
    def value(self) -> str:
        """The hash to look up or block: SHA-256 when known, else SHA-1, else MD5."""
        return self.sha256 or self.sha1 or self.md5 or ""

    @property
    def algorithm(self) -> str:
        return "SHA256" if self.sha256 else "SHA1" if self.sha1 else "MD5"

    @property
    def hashes(self) -> tuple[str, ...]:
        return tuple(h for h in (self.sha256, self.sha1, self.md5) if h)


@dataclass(frozen=True)
class UrlEntity:
    url: str  # as received, trimmed


@dataclass(frozen=True)
class DomainEntity:
    domain: str  # lower-case ASCII (IDNA), no trailing dot


def parse_hash(algorithm: str | None, value: str | None) -> tuple[str, str] | str:
    """(md5 | sha1 | sha256, lower-case hex) or the reason it is not a usable file hash."""
    text = (value or "").strip().lower()
    stated = (algorithm or "").strip().upper()
    if not text:
        return "file hash entity without a value"
    if stated == "SHA256AC":
        return "Authenticode (SHA256AC) hash: files are looked up by their own hashes"
    if not _HEX.match(text) or len(text) not in HASH_LENGTHS:
        return "not an MD5, SHA-1 or SHA-256 hash (32, 40 or 64 hex digits)"
    kind = HASH_LENGTHS[len(text)]
    if stated not in ("", "UNKNOWN") and stated.replace("-", "") != kind.upper():
        return f"a {len(text)}-digit value is not a {stated} hash"
    return kind, text


def parse_url(raw: str | None) -> UrlEntity | str:
    text = (raw or "").strip()
    if not text:
        return "URL entity without a URL"
    if len(text) > 8192 or any(ord(ch) < 33 for ch in text):
        return "not a URL (too long, or spaces or control characters)"
    try:
        parts = urlsplit(text)
        host, _port = parts.hostname, parts.port  # .port raises ValueError on a bad port
    except ValueError:
        return "not a URL (it does not parse)"
    if parts.scheme.lower() not in URL_SCHEMES or not host:
        return f"not a URL VirusTotal knows ({', '.join(URL_SCHEMES)} with a host)"
    return UrlEntity(text)


def parse_domain(raw: str | None) -> DomainEntity | str:
    text = (raw or "").strip().rstrip(".").lower()
    if not text:
        return "DNS entity without a domain name"
    try:
        ipaddress.ip_address(text)
        return "an IP address, not a domain name"
    except ValueError:
        pass
    try:
        ascii_name = text.encode("idna").decode("ascii")
    except UnicodeError:
        return "not a valid domain name (IDNA)"
    labels = ascii_name.split(".")
    if len(ascii_name) > 253 or not all(_LABEL.match(label) for label in labels):
        return "not a valid domain name (labels of letters, digits and hyphens, 1-63 characters)"
    if len(labels) < 2:
        return "a single-label name (an internal host name, not a public domain)"
    return DomainEntity(ascii_name)


class FileGroups:
    """Collects hashes per file and merges files that share a hash into one indicator."""

    def __init__(self) -> None:
        self._groups: list[tuple[dict[str, str], str | None]] = []

    def add(self, hashes: Mapping[str, str], name: str | None = None) -> None:
        if not hashes:
            return
        merged, merged_name, position = dict(hashes), name, None
        kept: list[tuple[dict[str, str], str | None]] = []
        for group, group_name in self._groups:
            if set(group.values()) & set(merged.values()):
                merged = {**group, **merged}
                merged_name = merged_name or group_name
                position = len(kept) if position is None else position
            else:
                kept.append((group, group_name))
        kept.insert(len(kept) if position is None else position, (merged, merged_name))  # first-seen order
        self._groups = kept

    def result(self) -> tuple[FileHashEntity, ...]:
        return tuple(FileHashEntity(g.get("sha256"), g.get("sha1"), g.get("md5"), name) for g, name in self._groups)


def hashes_of(pairs: Iterable[tuple[str | None, str | None]]) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """({md5|sha1|sha256: value}, [(raw value, reason)]) from (algorithm, value) pairs."""
    found: dict[str, str] = {}
    bad: list[tuple[str, str]] = []
    for algorithm, value in pairs:
        parsed = parse_hash(algorithm, value)
        if isinstance(parsed, str):
            bad.append((str(value or "")[:100], parsed))
        else:
            found.setdefault(parsed[0], parsed[1])
    return found, bad


__all__ = ["DomainEntity", "FileGroups", "FileHashEntity", "UrlEntity", "hashes_of", "parse_domain", "parse_hash",
           "parse_url"]
