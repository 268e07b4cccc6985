"""Table keys built from payload text (incident names, entity ids) are accepted by Table Storage.

The service rejects keys holding / \\ # ? or a control character (U+0000-U+001F, U+007F-U+009F) with
a 400, which the store reports as StateUnavailable (503): a Logic App would retry it forever.
``key_safe`` must map every one of them away (found by fuzzing: an incident name with U+0087).
"""

from __future__ import annotations

import uuid

import pytest

from core.state import StateStore, key_safe

FORBIDDEN = "/\\#?" + "".join(map(chr, range(0x20))) + "".join(map(chr, range(0x7F, 0xA0)))


@pytest.fixture
def store(stack) -> StateStore:
    return StateStore(connection_string=stack.azurite.connection_string, prefix="ks" + uuid.uuid4().hex[:8])


def test_every_forbidden_character_is_mapped_away_and_the_service_takes_the_key(store):
    keys = [key_safe(f"incident{ch}name") for ch in FORBIDDEN]
    assert all(not set(key) & set(FORBIDDEN) for key in keys)
    for key in keys:
        store.upsert("keys", {"PartitionKey": key, "RowKey": key, "value": 1})
        assert store.get("keys", key, key)["value"] == 1
        with store.lock("locks", f"user|{key}"):
            pass


def test_other_text_is_kept():
    text = "2001:db8::1 adele.vance@contoso.com Zoë 😀 ü"
    assert key_safe(text) == text


def test_writes_answer_the_new_etag_so_the_row_can_be_written_again_without_a_read(store):
    row = {"PartitionKey": "p", "RowKey": "r", "value": 1}
    first = store.insert("etags", row)
    assert first and first == store.get("etags", "p", "r")["_etag"]
    assert store.insert("etags", row) is None  # the key exists: nothing written, no etag
    second = store.replace("etags", {**row, "value": 2}, first)
    assert second and second != first and second == store.get("etags", "p", "r")["_etag"]
    assert store.replace("etags", {**row, "value": 3}, first) is None  # stale etag: someone wrote since
    assert store.get("etags", "p", "r")["value"] == 2
    assert store.insert_if_absent("etags", {**row, "RowKey": "s"}) is True
    assert store.replace_if_unchanged("etags", {**row, "value": 4}, second) is True
