"""core.concurrency: bounded, ordered, context-preserving fan-out. Event-based: no timing assertions."""

from __future__ import annotations

import contextvars
import threading

import pytest

from core.concurrency import run_all, run_bounded

VAR: contextvars.ContextVar[str] = contextvars.ContextVar("test_var", default="unset")


def test_runs_up_to_the_limit_at_once_and_never_more():
    limit, active, peak, lock = 3, 0, 0, threading.Lock()
    barrier = threading.Barrier(limit, timeout=30)  # breaks (and fails the test) unless `limit` run together

    def work(item: int) -> int:
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
        try:
            barrier.wait()
        finally:
            with lock:
                active -= 1
        return item * 2

    outcomes = run_bounded(work, range(9), limit)
    assert [o.get() for o in outcomes] == [i * 2 for i in range(9)]
    assert peak == limit


def test_results_keep_the_items_order_and_errors_are_collected():
    release = threading.Event()

    def work(item: int) -> int:
        if item == 0:
            release.wait(30)  # the first item finishes last
        if item == 2:
            raise ValueError("two")
        if item == 3:
            release.set()
        return item

    outcomes = run_bounded(work, range(5), 5)
    assert [o.item for o in outcomes] == [0, 1, 2, 3, 4]
    assert [o.ok for o in outcomes] == [True, True, False, True, True]
    with pytest.raises(ValueError, match="two"):
        outcomes[2].get()


def test_stop_starts_no_further_item():
    started: list[int] = []

    def work(item: int) -> int:
        started.append(item)
        if item == 1:
            raise RuntimeError("quota")
        return item

    outcomes = run_bounded(work, range(6), 1, stop=lambda error: isinstance(error, RuntimeError))
    assert started == [0, 1] and len(outcomes) == 2

    gate = threading.Event()

    def parallel(item: int) -> int:
        if item == 0:
            raise RuntimeError("quota")
        gate.wait(30)
        return item

    def stop(error: BaseException) -> bool:
        gate.set()  # item 1 was started alongside item 0; let it finish
        return True

    outcomes = run_bounded(parallel, range(6), 2, stop=stop)
    assert [o.item for o in outcomes] == [0, 1]  # items 2.. never started: the caller defers them


def test_tasks_see_the_callers_context():
    VAR.set("incident-42")
    seen = [o.get() for o in run_bounded(lambda _: VAR.get(), range(4), 4)]
    assert seen == ["incident-42"] * 4


def test_run_all_returns_values_and_raises_the_first_error_after_all_finished():
    finished = threading.Event()

    def slow_ok() -> str:
        finished.set()
        return "ok"

    assert run_all(lambda: 1, lambda: 2) == [1, 2]

    def boom() -> str:
        raise KeyError("first")

    with pytest.raises(KeyError):
        run_all(boom, slow_ok)
    assert finished.is_set()
