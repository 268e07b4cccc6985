"""State in Azure Table Storage (Azurite locally and in CI) and work queues in Queue Storage.

Every table has its own key design, documented where the table is used. The store offers the
few operations the pack's idempotency rests on: point reads, upserts, a conditional insert
(exactly one of several concurrent writers wins), an etag-guarded replace, entity group
transactions (several rows of one partition, all or nothing, in one request) and leases built on
them. Storage failures become ``StateUnavailable`` (503 + Retry-After): nothing is done without state.
azure-data-tables is imported on first use, not at cold start. A table is created when a write finds it missing
(404 TableNotFound), not proactively: a fresh worker's first call paid one create_table round trip per table it
touched (three for an Entra action, ~150 ms under real latency) for tables that exist after the pack's first write.

One connection pool per process: every table and queue client of the store shares one requests
session (``STATE_POOL_SIZE`` connections per host). By default each azure-core client builds its own
transport with requests' pool of 10, so 200 concurrent calls logged "Connection pool is full" and opened
(and discarded) a connection per call past the tenth.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

from core.errors import Busy, ConfigurationError, StateUnavailable

log = logging.getLogger(__name__)

# One operation of an entity group transaction, in azure-data-tables' shape: (verb, entity[, options]).
Operation = tuple
MAX_TRANSACTION = 100  # operations per entity group transaction (Table Storage's limit)
BUSY_RETRY_SECONDS = 5  # the Logic App retry policy's shortest interval: asking for less buys nothing


class TransactionFailed(Exception):
    """One operation of a transaction was refused (409 exists, 412 etag, 404 missing): nothing was written."""

    def __init__(self, index: int, status: int | None, code: str) -> None:
        super().__init__(f"operation {index} failed: HTTP {status} {code}")
        self.index, self.status, self.code = index, status, code


class Companion(Protocol):
    """Rows to change in the same transaction as a lease (same table and partition), e.g. a counter.

    ``operations`` is asked again after ``refresh`` when one of its operations was refused (a concurrent
    writer changed the row): it re-reads what it needs and may raise to give up (e.g. a cap is reached)."""

    def operations(self) -> list[Operation]: ...

    def refresh(self) -> None: ...


@dataclass
class Lease:
    """Leases held on rows of one partition, with the etag each insert returned (released by that etag)."""

    table: str
    partition: str
    etags: dict[str, str] = field(default_factory=dict)

    @property
    def rows(self) -> list[str]:
        return list(self.etags)


def op_create(entity: dict) -> Operation:
    return ("create", _clean(entity))


def op_merge(entity: dict) -> Operation:
    """Insert, or update only the given columns of an existing row (others are kept)."""
    from azure.data.tables import UpdateMode

    return ("upsert", _clean(entity), {"mode": UpdateMode.MERGE})


def op_replace(entity: dict, etag: str) -> Operation:
    from azure.core import MatchConditions
    from azure.data.tables import UpdateMode

    return ("update", _clean(entity), {"mode": UpdateMode.REPLACE, "etag": etag,
                                       "match_condition": MatchConditions.IfNotModified})


def op_delete(partition: str, row: str, etag: str) -> Operation:
    from azure.core import MatchConditions

    return ("delete", {"PartitionKey": partition, "RowKey": row}, {"etag": etag,
                                                                   "match_condition": MatchConditions.IfNotModified})


def _clean(entity: dict) -> dict:
    return {k: v for k, v in entity.items() if not k.startswith("_")}


class StateStore:
    """Tables and queues of one storage account, named with an optional prefix."""

    def __init__(self, *, connection_string: str | None = None, table_uri: str | None = None,
                 queue_uri: str | None = None, credential: Any = None, prefix: str = "",
                 timeout: float | None = None, retries: int | None = None, pool_size: int = 200) -> None:
        if not connection_string and not table_uri:
            raise ConfigurationError("state store: set STATE_STORAGE_CONNECTION or STATE_TABLE_SERVICE_URI")
        # The storage SDKs' own defaults wait up to 300 s per request: a hung storage account would hold
        # the function past the Logic App's timeout instead of answering StateUnavailable to retry.
        self._options: dict[str, Any] = {}
        if timeout:
            self._options.update(connection_timeout=timeout, read_timeout=timeout)
        if retries is not None:
            self._options["retry_total"] = retries
        self._conn = connection_string
        self._table_uri = table_uri
        self._queue_uri = queue_uri
        self._credential = credential
        self.prefix = "".join(ch for ch in prefix if ch.isalnum())
        self._tables: dict[str, Any] = {}
        self._queues: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._pool_size = max(1, pool_size)
        self._shared_transport: Any = None

    def _transport(self) -> Any:
        """The one transport (requests session and its pools) every client of this store uses."""
        if self._shared_transport is None:
            import requests
            from azure.core.pipeline.transport import RequestsTransport
            from requests.adapters import HTTPAdapter
            from urllib3.util.retry import Retry

            session = requests.Session()
            # Retries are azure-core's (its RetryPolicy, bounded by the options above), never urllib3's.
            adapter = HTTPAdapter(pool_connections=4, pool_maxsize=self._pool_size,
                                  max_retries=Retry(total=False, redirect=False, raise_on_status=False))
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            # The timeouts belong to the transport: a client given a transport no longer applies its own options.
            bounds = {k: v for k, v in self._options.items() if k in ("connection_timeout", "read_timeout")}
            self._shared_transport = RequestsTransport(session=session, session_owner=False, **bounds)
        return self._shared_transport

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
            options = {**self._options, "transport": self._transport()}
            if self._conn:
                service = TableServiceClient.from_connection_string(self._conn, **options)
            else:
                service = TableServiceClient(endpoint=self._table_uri, credential=self._credential, **options)
            # Not created here: tables exist once the pack has written to them, so a fresh worker would pay a
            # create_table round trip per table before its first call's requests; ``_on_table`` creates a missing one.
            return service.get_table_client(self.table_name(name)), None

        return self._client(self._tables, self.table_name(name), build)

    def _on_table(self, table: str, call):
        """``call(client)`` on ``table``; when the service answers that the table does not exist (the first write of a
        deployment), create it and call again."""
        client = self._table(table)
        try:
            return call(client)
        except Exception as exc:  # the azure exceptions are imported lazily; anything else is raised as it was
            if not _table_missing(exc):
                raise
        self._create_table(client)
        return call(client)

    def _create_table(self, client) -> None:
        from azure.core.exceptions import AzureError, ResourceExistsError

        try:
            client.create_table()
        except ResourceExistsError:
            pass  # another worker created it meanwhile
        except AzureError as exc:
            raise self._unavailable(exc) from None

    def _queue(self, name: str):
        from azure.storage.queue import BinaryBase64DecodePolicy, BinaryBase64EncodePolicy, QueueClient

        def build():
            # The Functions host expects base64 messages by default.
            policies = {"message_encode_policy": BinaryBase64EncodePolicy(),
                        "message_decode_policy": BinaryBase64DecodePolicy(), "transport": self._transport()}
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
        """A cached client for table or queue ``full``, built on first use; a queue is created with it (``build``
        returns its create call), a table when a write finds it missing (``_on_table``)."""
        client = cache.get(full)
        if client is not None:
            return client
        from azure.core.exceptions import AzureError, ResourceExistsError

        with self._lock:
            if full not in cache:
                client, create = build()
                try:
                    if create is not None:
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
            self._on_table(table, lambda client: client.upsert_entity(self._clean(entity), mode=UpdateMode.REPLACE))
        except AzureError as exc:
            raise self._unavailable(exc) from None

    def insert_if_absent(self, table: str, entity: dict) -> bool:
        """Insert; False (and no change) when the key exists. Exactly one concurrent caller wins."""
        return self.insert(table, entity) is not None

    def insert(self, table: str, entity: dict) -> str | None:
        """``insert_if_absent`` that returns the new row's etag (from the insert's answer: no read needed to
        write the row again conditionally), or None when the key exists."""
        from azure.core.exceptions import AzureError, ResourceExistsError

        try:
            answer = self._on_table(table, lambda client: client.create_entity(self._clean(entity)))
        except ResourceExistsError:
            return None
        except AzureError as exc:
            raise self._unavailable(exc) from None
        return self._written_etag(table, entity, answer)

    def replace_if_unchanged(self, table: str, entity: dict, etag: str) -> bool:
        """Replace only if the stored entity still has ``etag``; False when someone got there first."""
        return self.replace(table, entity, etag) is not None

    def replace(self, table: str, entity: dict, etag: str) -> str | None:
        """``replace_if_unchanged`` that returns the row's new etag (from the answer), or None when the stored
        entity no longer has ``etag`` (or is gone)."""
        from azure.core import MatchConditions
        from azure.core.exceptions import AzureError, ResourceModifiedError, ResourceNotFoundError
        from azure.data.tables import UpdateMode

        try:
            answer = self._table(table).update_entity(self._clean(entity), mode=UpdateMode.REPLACE, etag=etag,
                                                      match_condition=MatchConditions.IfNotModified)
        except (ResourceModifiedError, ResourceNotFoundError):
            return None
        except AzureError as exc:
            if getattr(exc, "status_code", None) == 412:
                return None
            raise self._unavailable(exc) from None
        return self._written_etag(table, entity, answer)

    def _written_etag(self, table: str, entity: dict, answer: Any) -> str:
        """The etag a write answered with (Table Storage sends it in the ``ETag`` header of every insert and
        update); read back only if an answer ever lacks it, so a later conditional write stays conditional."""
        etag = answer.get("etag") if isinstance(answer, dict) else None
        if etag:
            return str(etag)
        row = self.get(table, entity["PartitionKey"], entity["RowKey"]) or {}
        return str(row.get("_etag") or "")

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
                yield {**entity, "_etag": entity.metadata.get("etag")}
        except AzureError as exc:
            if _table_missing(exc):
                return  # nothing written yet: no rows
            raise self._unavailable(exc) from None

    def get_many(self, table: str, partition: str, rows: Sequence[str]) -> dict[str, dict]:
        """Rows of one partition by key, in as few requests as the service allows (a filter holds at most 15
        comparisons: the partition and 14 keys); missing rows are absent from the answer."""
        found: dict[str, dict] = {}
        keys = sorted(set(rows))
        for start in range(0, len(keys), 14):
            chunk = keys[start:start + 14]
            names = {f"k{i}": key for i, key in enumerate(chunk)}
            # Parameters must be followed by a space: the SDK substitutes whitespace-separated words.
            filter_ = "PartitionKey eq @p and ( " + " or ".join(f"RowKey eq @{n}" for n in names) + " )"
            for entity in self.query(table, filter_, {"p": partition, **names}):
                found[entity["RowKey"]] = entity
        return found

    def transaction(self, table: str, operations: Sequence[Operation]) -> list[dict]:
        """Apply ``operations`` (rows of one partition) all or none, in one request; the answer's metadata
        per operation (``etag`` of each written row). ``TransactionFailed`` names the refused operation."""
        from azure.core.exceptions import AzureError
        from azure.data.tables import TableTransactionError

        if len(operations) > MAX_TRANSACTION:
            raise ConfigurationError(f"one transaction holds at most {MAX_TRANSACTION} rows, got {len(operations)}")
        try:
            return [dict(meta) for meta in self._on_table(table, lambda client: client.submit_transaction(
                list(operations)))]
        except TableTransactionError as exc:
            if exc.status_code in (404, 409, 412):
                raise TransactionFailed(exc.index, exc.status_code, str(exc.error_code or "")) from None
            raise self._unavailable(exc) from None
        except AzureError as exc:
            raise self._unavailable(exc) from None

    def acquire(self, table: str, keys: Sequence[str], *, partition: str = "lock", hold_seconds: float = 60.0,
                companion: Companion | None = None, attempts: int = 4) -> Lease:
        """Lease every key at once, without waiting: one transaction inserts a row per key (and applies the
        companion's rows with it). A key another run holds raises ``Busy`` at once (429 + Retry-After): the
        caller's retry policy waits, not a polling loop here. A lease past its ``until`` (its holder crashed)
        is taken over with an etag-guarded replace in the same transaction.
        """
        rows = sorted({key_safe(k)[:512] for k in keys if k})
        takeover: dict[str, str] = {}  # row -> etag of an expired lease found on an earlier attempt
        for _ in range(attempts):
            until = time.time() + hold_seconds
            ops = [op_replace(self._lease_row(partition, row, until), takeover[row]) if row in takeover
                   else op_create(self._lease_row(partition, row, until)) for row in rows]
            extra = companion.operations() if companion is not None else []
            if not ops and not extra:
                return Lease(table, partition)
            try:
                results = self.transaction(table, ops + extra)
            except TransactionFailed as failed:
                if failed.index >= len(rows):  # the companion's row changed under it: re-read, re-plan
                    assert companion is not None
                    companion.refresh()
                    continue
                row = rows[failed.index]
                held = self.get(table, partition, row)
                if held is None:
                    takeover.pop(row, None)  # released in between: insert again
                elif float(held.get("until") or 0) >= time.time():
                    raise Busy(f"another run is acting on {row} right now; retry shortly",
                               retry_after=BUSY_RETRY_SECONDS) from None
                else:
                    takeover[row] = held["_etag"]
                continue
            return Lease(table, partition, {row: str(results[i].get("etag")) for i, row in enumerate(rows)})
        raise Busy(f"could not take the lease of {', '.join(rows)[:200]}: too many concurrent changes",
                   retry_after=BUSY_RETRY_SECONDS)

    def release(self, lease: Lease, also: Sequence[Operation] = ()) -> None:
        """Give the leases back by their etags (a lease that expired and passed to another run is left to it)
        and apply ``also`` (rows of the same partition) in the same request."""
        ops = [op_delete(lease.partition, row, etag) for row, etag in lease.etags.items()] + list(also)
        if not ops:
            return
        try:
            self.transaction(lease.table, ops)
        except TransactionFailed:
            # A lease outlived its hold and was taken over (412) or is gone (404): release one by one.
            for row, etag in lease.etags.items():
                self._delete_if(lease.table, lease.partition, row, etag)
            for op in also:
                self.transaction(lease.table, [op])
        lease.etags.clear()

    @contextmanager
    def lock(self, table: str, *keys: str, hold_seconds: float = 60.0) -> Iterator[Lease]:
        """Run the block while holding ``keys`` (see ``acquire``): Busy at once when another run holds one.

        Duplicate automation rules and Logic App retries can bring the same target (a machine, a user,
        an address) to several runs at once. Each run's read-check-write on the target happens inside
        the lease, so the later runs see the first run's result instead of writing again. A crashed
        holder's lease expires after ``hold_seconds``.
        """
        lease = self.acquire(table, keys, hold_seconds=hold_seconds)
        try:
            yield lease
        finally:
            try:
                self.release(lease)
            except StateUnavailable:
                log.warning("could not release the lease of %s in %s; it expires by itself", lease.rows, table)

    @staticmethod
    def _lease_row(partition: str, row: str, until: float) -> dict:
        return {"PartitionKey": partition, "RowKey": row, "until": until}

    def _delete_if(self, table: str, partition: str, row: str, etag: str) -> None:
        """Delete the row only while it still has ``etag``."""
        from azure.core import MatchConditions
        from azure.core.exceptions import AzureError, ResourceModifiedError, ResourceNotFoundError

        try:
            self._table(table).delete_entity(partition_key=partition, row_key=row, etag=etag,
                                             match_condition=MatchConditions.IfNotModified)
        except (ResourceModifiedError, ResourceNotFoundError):
            pass
        except AzureError as exc:
            if getattr(exc, "status_code", None) not in (404, 412):
                raise self._unavailable(exc) from None

    @staticmethod
    def _clean(entity: dict) -> dict:
        return _clean(entity)

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
            if not _table_missing(exc):  # the service answered: reachable
                raise self._unavailable(exc) from None


def _table_missing(exc: BaseException) -> bool:
    """The service's 404 TableNotFound (entity operations and transactions on a table never created; create_entity
    carries the code only in its message)."""
    if getattr(exc, "status_code", None) != 404:
        return False
    return getattr(exc, "error_code", None) == "TableNotFound" or "TableNotFound" in str(exc)


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
            pool_size=int(settings["STATE_POOL_SIZE"]),  # type: ignore[arg-type]
        )
    return _store
