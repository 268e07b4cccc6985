"""Bounded concurrency for independent outbound calls: the pack's one way to run calls side by side.

Threads, not asyncio: the Functions Python worker runs synchronous functions on its thread pool, and
the clients the pack uses (requests, azure-data-tables, pysnow) are synchronous. Each call that fans
out gets its own small pool, sized ``min(limit, len(items))``: a shared pool could deadlock when a task
itself fans out (enrichment look-ups inside a response run), and starting a thread costs microseconds
next to a round trip. Connection pools stay per process (core/http.py, core/state.py): the threads
share them.

Tasks run in a copy of the caller's ``contextvars`` context, so log records keep their action and
incident (core/telemetry.py) and the local host's Server-Timing ledger sees the calls.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class Outcome(Generic[T, R]):
    """What one task gave: its item, and its value or the exception it raised."""

    item: T
    value: R | None = None
    error: BaseException | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def get(self) -> R:
        """The value, or the task's exception raised again."""
        if self.error is not None:
            raise self.error
        return self.value  # type: ignore[return-value]


def run_bounded(work: Callable[[T], R], items: Iterable[T], limit: int, *,
                stop: Callable[[BaseException], bool] | None = None) -> list[Outcome[T, R]]:
    """Run ``work(item)`` for every item, at most ``limit`` at a time; outcomes in the items' order.

    Exceptions are collected, not raised: the caller decides what a failure of one item means for the
    others. ``stop(error)`` returning True starts no further item after that error (e.g. VirusTotal's
    quota is spent); items never started are missing from the result, so ``len(result)`` tells how far
    the run got. With one item or ``limit <= 1`` the items run one after another in the calling thread.
    """
    items = list(items)
    if not items:
        return []
    if limit <= 1 or len(items) == 1:
        return _sequential(work, items, stop)
    outcomes: dict[int, Outcome[T, R]] = {}
    stopped = False
    with ThreadPoolExecutor(max_workers=min(limit, len(items)), thread_name_prefix="pack") as pool:
        pending: dict[Future, int] = {}
        position = 0

        def submit() -> None:
            nonlocal position
            index, position = position, position + 1
            context = contextvars.copy_context()
            pending[pool.submit(context.run, _capture, work, items[index])] = index

        while position < len(items) and len(pending) < limit:
            submit()
        while pending:
            done = _first_done(pending)
            index = pending.pop(done)
            outcome = done.result()
            outcomes[index] = Outcome(items[index], outcome[0], outcome[1])
            if outcome[1] is not None and stop is not None and stop(outcome[1]):
                stopped = True
            if not stopped and position < len(items):
                submit()
    return [outcomes[i] for i in sorted(outcomes)]


def _sequential(work: Callable[[T], R], items: Sequence[T],
                stop: Callable[[BaseException], bool] | None) -> list[Outcome[T, R]]:
    out: list[Outcome[T, R]] = []
    for item in items:
        value, error = _capture(work, item)
        out.append(Outcome(item, value, error))
        if error is not None and stop is not None and stop(error):
            break
    return out


def _capture(work: Callable[[T], R], item: T) -> tuple[R | None, BaseException | None]:
    try:
        return work(item), None
    except Exception as error:  # collected for the caller; BaseException (KeyboardInterrupt) still escapes
        return None, error


def _first_done(pending: dict[Future, int]) -> Future:
    from concurrent.futures import FIRST_COMPLETED, wait

    done, _ = wait(pending, return_when=FIRST_COMPLETED)
    # Take the lowest index among those done, so results are deterministic when several finish together.
    return min(done, key=lambda f: pending[f])


def run_all(*calls: Callable[[], R]) -> list[R]:
    """Run a few independent calls side by side (a comment and a label, Teams and Slack) and return their
    values in order; the first exception (in call order) is raised after all have finished, so no call is
    left running behind the caller's back."""
    outcomes = run_bounded(lambda call: call(), calls, len(calls))
    return [outcome.get() for outcome in outcomes]


__all__ = ["Outcome", "run_all", "run_bounded"]
