"""State in Azure Table Storage (Azurite locally and in CI) and work queues in Queue Storage.

Every table has its own key design, documented where the table is used. The store offers the
few operations the pack's idempotency rests on: point reads, upserts, a conditional insert
(exactly one of several concurrent writers wins) and an etag-guarded replace. Storage
failures become ``StateUnavailable`` (503 + Retry-After): nothing is done without state.
azure-data-tables is imported on first use, not at cold start.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from core.errors import Busy, ConfigurationError, StateUnavailable

log = logging.getLogger(__name__)


class StateStore:
    """Tables and queues of one storage account, named with an optional prefix."""

    def __init__(self, *, connection_string: str | None = None, table_uri: str | None = None,
                 queue_uri: str | None = None, credential: Any = None, prefix: str = "",
                 timeout: float | None = None, retries: int | None = None) -> None:
        if not connection_string and not table_uri:
            raise ConfigurationError("state store: set STATE_STORAGE_CONNECTION or STATE_TABLE_SERVICE_URI")
        # The storage SDKs' own defaults wait up to 300 s per request: a hung storage account would hold
        # the function past the Logic App's timeout instead of answering StateUnavailable to retry.
        self._options: dict[str, Any] = {}
        if timeout:
            self._options.update(connection_timeout=timeout, read_timeout=timeout)
        if retries is not None:
            self._options["retry_total"] = retries
        # One connection pool for every table and queue client of the process, sized for actions that run their
        # storage calls side by side (azure-core's default adapter keeps 10 connections and discards the rest).
        self._options["transport"] = _pooled_transport(timeout)
        self._conn = connection_string
        self._table_uri = table_uri
        self._queue_uri = queue_uri
        self._credential = credential
        self.prefix = "".join(ch for ch in prefix if ch.isalnum())
        self._tables: dict[str, Any] = {}
        self._queues: dict[str, Any] = {}
        self._lock = threading.Lock()

    # -- clients ------------------------------------------------------------------------------
    def table_name(self, name: str) -> str:
        return f"{self.prefix}{name}"

    @staticmethod
    def queue_name(name: str) -> str:
        # Not prefixed: a queue trigger's queue name is fixed in its decorator.
        return name

    def _table(self, name: str):
        from azure.data.tables import TableServiceClient

        def build():
            if self._conn:
                service = TableServiceClient.from_connection_string(self._conn, **self._options)
            else:
                service = TableServiceClient(endpoint=self._table_uri, credential=self._credential, **self._options)
            client = service.get_table_client(self.table_name(name))
            return client, client.create_table

        return self._client(self._tables, self.table_name(name), build)

    def _queue(self, name: str):
        from azure.storage.queue import BinaryBase64DecodePolicy, BinaryBase64EncodePolicy, QueueClient

        def build():
            # The Functions host expects base64 messages by default.
            policies = {"message_encode_policy": BinaryBase64EncodePolicy(),
                        "message_decode_policy": BinaryBase64DecodePolicy()}
            full = self.queue_name(name)
            if self._conn:
                client = QueueClient.from_connection_string(self._conn, full, **policies, **self._options)
            else:
                if not self._queue_uri:
                    raise ConfigurationError("state store: set STATE_QUEUE_SERVICE_URI for deferred work")
                client = QueueClient(self._queue_uri, full, credential=self._credential, **policies,
                                     **self._options)
            return client, client.create_queue

        return self._client(self._queues, self.queue_name(name), build)

    def _client(self, cache: dict[str, Any], full: str, build):
        """A cached client for table or queue ``full``, created (with its resource) on first use."""
        client = cache.get(full)
        if client is not None:
            return client
        from azure.core.exceptions import AzureError, ResourceExistsError

        with self._lock:
            if full not in cache:
                client, create = build()
                try:
                    create()
                except ResourceExistsError:
                    pass
                except AzureError as exc:
                    raise self._unavailable(exc) from None
                cache[full] = client
        return cache[full]

    @staticmethod
    def _unavailable(exc: Exception) -> StateUnavailable:
        log.warning("state store error: %s", type(exc).__name__)
        return StateUnavailable(f"state store unavailable ({type(exc).__name__})", retry_after=10)

    # -- table operations ---------------------------------------------------------------------
    def get(self, table: str, partition: str, row: str) -> dict | None:
        from azure.core.exceptions import AzureError, ResourceNotFoundError

        try:
            entity = self._table(table).get_entity(partition_key=partition, row_key=row)
        except ResourceNotFoundError:
            return None
        except AzureError as exc:
            raise self._unavailable(exc) from None
        result = dict(entity)
        result["_etag"] = entity.metadata.get("etag")
        return result

    def upsert(self, table: str, entity: dict) -> None:
        from azure.core.exceptions import AzureError
        from azure.data.tables import UpdateMode

        try:
            self._table(table).upsert_entity(self._clean(entity), mode=UpdateMode.REPLACE)
        except AzureError as exc:
            raise self._unavailable(exc) from None

    def insert_if_absent(self, table: str, entity: dict) -> bool:
        """Insert; False (and no change) when the key exists. Exactly one concurrent caller wins."""
        from azure.core.exceptions import AzureError, ResourceExistsError

        try:
            self._table(table).create_entity(self._clean(entity))
            return True
        except ResourceExistsError:
            return False
        except AzureError as exc:
            raise self._unavailable(exc) from None

    def replace_if_unchanged(self, table: str, entity: dict, etag: str) -> bool:
        """Replace only if the stored entity still has ``etag``; False when someone got there first."""
        from azure.core import MatchConditions
        from azure.core.exceptions import AzureError, ResourceModifiedError, ResourceNotFoundError
        from azure.data.tables import UpdateMode

        try:
            self._table(table).update_entity(self._clean(entity), mode=UpdateMode.REPLACE, etag=etag,
                                             match_condition=MatchConditions.IfNotModified)
            return True
        except (ResourceModifiedError, ResourceNotFoundError):
            return False
        except AzureError as exc:
            if getattr(exc, "status_code", None) == 412:
                return False
            raise self._unavailable(exc) from None

    def delete(self, table: str, partition: str, row: str) -> None:
        from azure.core.exceptions import AzureError

        try:
            self._table(table).delete_entity(partition_key=partition, row_key=row)
        except AzureError as exc:
            raise self._unavailable(exc) from None

    def query(self, table: str, filter_: str, parameters: dict | None = None) -> Iterator[dict]:
        from azure.core.exceptions import AzureError

        try:
            for entity in self._table(table).query_entities(filter_, parameters=parameters or {}):
                yield dict(entity)
        except AzureError as exc:
            raise self._unavailable(exc) from None

    @contextmanager
    def lock(self, table: str, key: str, *, hold_seconds: float = 60.0, wait_seconds: float = 20.0) -> Iterator[None]:
        """Run the block while no other run holds ``key``: one lease row with an expiry.

        Duplicate automation rules and Logic App retries can bring the same target (a machine, a
        user, an address) to several runs at once. Each run's read-check-write on the target happens
        inside this lock, so the later runs see the first run's result instead of writing again. A
        crashed holder's lease expires after ``hold_seconds``; waiting past ``wait_seconds`` raises
        Busy (429 + Retry-After) and the Logic App retries.
        """
        partition, row, owner = "lock", key_safe(key)[:512], uuid.uuid4().hex
        deadline, pause = time.monotonic() + wait_seconds, 0.02
        while True:
            lease = {"PartitionKey": partition, "RowKey": row, "owner": owner, "until": time.time() + hold_seconds}
            if self.insert_if_absent(table, lease):
                break
            held = self.get(table, partition, row)
            if held is not None and float(held.get("until", 0)) < time.time() \
                    and self.replace_if_unchanged(table, lease, held["_etag"]):
                break  # the holder crashed: its lease ran out
            if held is not None and time.monotonic() > deadline:
                raise Busy(f"another run is acting on {key} right now", retry_after=5)
            if held is not None:
                time.sleep(pause)
                pause = min(pause * 2, 0.25)
        try:
            yield
        finally:
            self._unlock(table, partition, row, owner)

    def _unlock(self, table: str, partition: str, row: str, owner: str) -> None:
        """Give the lease back if it is still ours (an expired one may have passed to another run)."""
        try:
            held = self.get(table, partition, row)
            if held is not None and held.get("owner") == owner:
                self.delete(table, partition, row)
        except StateUnavailable:
            log.warning("could not release lock %s/%s; it expires by itself", table, row)

    @staticmethod
    def _clean(entity: dict) -> dict:
        return {k: v for k, v in entity.items() if not k.startswith("_")}

    # -- queues -------------------------------------------------------------------------------
    def enqueue(self, queue: str, message: dict, *, delay_seconds: int = 0) -> None:
        from azure.core.exceptions import AzureError

        try:
            self._queue(queue).send_message(json.dumps(message).encode(), visibility_timeout=delay_seconds)
        except AzureError as exc:
            raise self._unavailable(exc) from None

    def ping(self) -> None:
        """Raise StateUnavailable when the table service cannot be reached (health check)."""
        from azure.core.exceptions import AzureError

        try:
            next(iter(self._table("health").query_entities("PartitionKey eq 'x'", results_per_page=1)), None)
        except AzureError as exc:
            raise self._unavailable(exc) from None


POOL_SIZE = 32  # connections kept per storage host: an enrichment run makes up to 16 storage calls at once


def _pooled_transport(timeout: float | None):
    """azure-core's requests transport over a session that keeps ``POOL_SIZE`` connections (its retries stay off:
    the storage SDK's own retry policy retries). A transport given to a client takes its timeouts from here."""
    import requests
    from azure.core.pipeline.transport import RequestsTransport
    from urllib3.util.retry import Retry

    session = requests.Session()
    adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=POOL_SIZE,
                                            max_retries=Retry(total=False, redirect=False, raise_on_status=False))
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    timeouts = {"connection_timeout": timeout, "read_timeout": timeout} if timeout else {}
    return RequestsTransport(session=session, session_owner=False, **timeouts)


def key_safe(value: str) -> str:
    """Table keys may not contain / \\ # ? or control characters (U+0000-U+001F and U+007F-U+009F,
    which the service rejects with 400); IPv6 colons are fine."""
    return "".join("_" if ch in "/\\#?" or ord(ch) < 32 or 0x7F <= ord(ch) <= 0x9F else ch for ch in value)


_store: StateStore | None = None


def get_state_store() -> StateStore:
    """The process-wide store, built from settings on first use."""
    global _store
    if _store is None:
        from core.credentials import get_token_provider
        from core.settings import get_settings

        settings = get_settings()
        connection = settings["STATE_STORAGE_CONNECTION"]
        credential = None if connection else get_token_provider().credential
        _store = StateStore(
            connection_string=str(connection) if connection else None,
            table_uri=settings["STATE_TABLE_SERVICE_URI"],  # type: ignore[arg-type]
            queue_uri=settings["STATE_QUEUE_SERVICE_URI"],  # type: ignore[arg-type]
            credential=credential,
            prefix=str(settings["STATE_TABLE_PREFIX"] or ""),
            timeout=float(settings["HTTP_TIMEOUT_SECONDS"]),  # type: ignore[arg-type]
            retries=int(settings["HTTP_MAX_RETRIES"]),  # type: ignore[arg-type]
        )
    return _store
