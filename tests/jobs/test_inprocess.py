"""The in-process job queue: retries, drain, failures logged, bounded drain at exit."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from storeroom.errors import ConfigurationError
from storeroom.jobs import (
    InProcessQueue,
    JobQueue,
    UnknownJob,
    get_queue,
    handler_for,
    job,
    set_queue,
)
from storeroom.retry import RetryPolicy

FAST = RetryPolicy(attempts=3, initial_backoff=0.001, max_backoff=0.01)


def test_handler_for_unknown_name_names_the_registered_ones() -> None:
    @job("tests.jobs.known")
    def known(payload: Mapping[str, Any]) -> None:
        pass

    with pytest.raises(
        UnknownJob, match=r"no handler for job 'tests.jobs.nope'.*'tests.jobs.known'"
    ):
        handler_for("tests.jobs.nope")
    assert handler_for("tests.jobs.known") is known


def test_two_handlers_under_one_name_are_refused() -> None:
    @job("tests.jobs.taken")
    def first(payload: Mapping[str, Any]) -> None:
        pass

    def second(payload: Mapping[str, Any]) -> None:
        pass

    with pytest.raises(ConfigurationError, match="already handled"):
        job("tests.jobs.taken")(second)
    with pytest.raises(ConfigurationError, match="non-empty string"):
        job("")


def test_jobs_run_off_the_enqueuing_thread_and_drain_waits_for_all() -> None:
    threads: list[str] = []
    lock = threading.Lock()

    @job("tests.jobs.record")
    def record(payload: Mapping[str, Any]) -> None:
        with lock:
            threads.append(f"{threading.current_thread().name}:{payload['n']}")

    queue = InProcessQueue(workers=3, retry=FAST)
    for n in range(50):
        queue.enqueue("tests.jobs.record", {"n": n})
    assert queue.drain(timeout=30)
    assert queue.pending == 0
    assert sorted(int(t.split(":")[1]) for t in threads) == list(range(50))
    assert all(t.startswith("storeroom-jobs-") for t in threads)
    assert len({t.split(":")[0] for t in threads}) <= 3


def test_a_failing_job_is_retried_until_it_succeeds() -> None:
    attempts: list[int] = []

    @job("tests.jobs.flaky")
    def flaky(payload: Mapping[str, Any]) -> None:
        attempts.append(1)
        if len(attempts) < 3:
            raise OSError("store briefly unavailable")

    queue = InProcessQueue(workers=1, retry=FAST)
    queue.enqueue("tests.jobs.flaky", {})
    assert queue.drain(timeout=30)
    assert len(attempts) == 3


def test_a_job_that_keeps_failing_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    attempts: list[int] = []

    @job("tests.jobs.broken")
    def broken(payload: Mapping[str, Any]) -> None:
        attempts.append(1)
        raise RuntimeError("permanently broken")

    queue = InProcessQueue(workers=1, retry=FAST)
    with caplog.at_level(logging.INFO, logger="storeroom.jobs"):
        queue.enqueue("tests.jobs.broken", {"path": "a/b"})  # does not raise
        assert queue.drain(timeout=30)
    assert len(attempts) == 3
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "'tests.jobs.broken' failed after 3 attempt(s)" in errors[0].getMessage()
    assert "permanently broken" in errors[0].getMessage()


def test_a_job_without_handler_is_logged_and_dropped(caplog: pytest.LogCaptureFixture) -> None:
    queue = InProcessQueue(workers=1, retry=FAST)
    with caplog.at_level(logging.ERROR, logger="storeroom.jobs"):
        queue.enqueue("tests.jobs.never_registered", {})
        assert queue.drain(timeout=30)
    assert any("never_registered" in r.getMessage() for r in caplog.records)


def test_drain_returns_false_when_time_runs_out() -> None:
    release = threading.Event()

    @job("tests.jobs.blocked")
    def blocked(payload: Mapping[str, Any]) -> None:
        release.wait(30)

    queue = InProcessQueue(workers=1, retry=FAST)
    queue.enqueue("tests.jobs.blocked", {})
    assert queue.drain(timeout=0.05) is False
    assert queue.pending == 1
    release.set()
    assert queue.drain(timeout=30) is True


def test_set_queue_swaps_and_restores_the_process_queue() -> None:
    class Recorder:
        def __init__(self) -> None:
            self.jobs: list[tuple[str, Mapping[str, Any]]] = []

        def enqueue(self, name: str, payload: Mapping[str, Any]) -> None:
            self.jobs.append((name, payload))

        def drain(self, timeout: float | None = None) -> bool:
            return True

    recorder = Recorder()
    assert isinstance(recorder, JobQueue)
    previous = set_queue(recorder)
    try:
        get_queue().enqueue("x", {"a": 1})
        assert recorder.jobs == [("x", {"a": 1})]
    finally:
        set_queue(previous)
    assert get_queue() is not recorder
    with pytest.raises(ConfigurationError, match="enqueue"):
        set_queue(object())  # type: ignore[arg-type]


def test_invalid_settings_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="workers"):
        InProcessQueue(workers=0)
    with pytest.raises(ConfigurationError, match="exit_timeout"):
        InProcessQueue(exit_timeout=-1)


def _run_child(tmp_path: Path, body: str) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(body))
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parents[2] / "src")
    env["PYTHONPATH"] = os.pathsep.join([src, env.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=120
    )


def test_jobs_queued_at_exit_are_finished_before_the_interpreter_leaves(tmp_path: Path) -> None:
    marker = tmp_path / "done"
    result = _run_child(
        tmp_path,
        f"""
        import threading
        from pathlib import Path
        from storeroom.jobs import InProcessQueue, job, set_queue

        gate = threading.Event()

        @job("child.write")
        def write(payload):
            gate.wait(0.2)  # still running when the main thread returns
            Path(payload["path"]).write_text("ok")

        queue = InProcessQueue(workers=1, exit_timeout=60)
        set_queue(queue)
        queue.enqueue("child.write", {{"path": {str(marker)!r}}})
        """,
    )
    assert result.returncode == 0, result.stderr
    assert marker.read_text() == "ok"


def test_exit_drain_is_bounded_and_says_what_was_left(tmp_path: Path) -> None:
    result = _run_child(
        tmp_path,
        """
        import logging, threading
        from storeroom.jobs import InProcessQueue, job

        logging.basicConfig(level=logging.WARNING)
        never = threading.Event()

        @job("child.stuck")
        def stuck(payload):
            never.wait()

        queue = InProcessQueue(workers=1, exit_timeout=0.2)
        queue.enqueue("child.stuck", {})
        """,
    )
    assert result.returncode == 0, result.stderr
    assert "1 background job(s) were still unfinished" in result.stderr
    assert "storeroom gc" in result.stderr
