"""Signature and payload checks of the ServiceNow push."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from core.errors import BadRequest, Unauthorized
from sync.webhook import parse_push, sign, verify

SECRET = "shared-secret"
BODY = b'{"sys_id": "a9c3e71f4b6d28059e1f7c3a5d8b2e60", "sys_mod_count": "4"}'


def test_signature_is_base64_hmac_sha256_as_glide_computes_it():
    expected = base64.b64encode(hmac.new(SECRET.encode(), BODY, hashlib.sha256).digest()).decode()
    assert sign(BODY, SECRET) == expected
    verify(BODY, expected, SECRET)
    verify(BODY, "sha256=" + expected, SECRET)


@pytest.mark.parametrize("header", [None, "", "bm9wZQ==", sign(BODY, "other-secret"), sign(BODY + b" ", SECRET)])
def test_bad_or_missing_signature_is_401(header):
    with pytest.raises(Unauthorized):
        verify(BODY, header, SECRET)


def test_payload():
    assert parse_push({"SYS_ID": "A9C3E71F4B6D28059E1F7C3A5D8B2E60", "sys_mod_count": "4"}) == (
        "a9c3e71f4b6d28059e1f7c3a5d8b2e60", 4)
    assert parse_push({"sys_id": "a9c3e71f4b6d28059e1f7c3a5d8b2e60", "extra": 1}) == (
        "a9c3e71f4b6d28059e1f7c3a5d8b2e60", None)


@pytest.mark.parametrize(("payload", "fragment"), [
    ([], "JSON object"),
    ({}, "sys_id"),
    ({"sys_id": "INC0010001"}, "sys_id"),
    ({"sys_id": "a9c3e71f4b6d28059e1f7c3a5d8b2e60", "sys_mod_count": "four"}, "sys_mod_count"),
    ({"sys_id": "a9c3e71f4b6d28059e1f7c3a5d8b2e60", "sys_mod_count": True}, "sys_mod_count"),
])
def test_bad_payload_names_the_problem(payload, fragment):
    with pytest.raises(BadRequest, match=fragment):
        parse_push(payload)
