"""Job handlers that the SAQ worker subprocesses of the tests (and benchmarks/media.py) import.

Each records its effect in Redis idempotently (the job's number into a set) and counts its
runs, so a test can tell "done exactly-effectively once" from "run once".
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any

import redis

from storeroom.jobs import job

_client: redis.Redis | None = None


def _redis() -> redis.Redis:
    global _client
    if _client is None:
        _client = redis.Redis.from_url(os.environ["STOREROOM_JOBS_TEST_REDIS"])
    return _client


@job("test.record")
def record(payload: Mapping[str, Any]) -> None:
    client, prefix, number = _redis(), payload["prefix"], payload["n"]
    runs = client.hincrby(f"{prefix}:runs", str(number), 1)
    if payload.get("hold"):
        client.set(f"{prefix}:holding", os.getpid())
        time.sleep(float(payload["hold"]))
    if payload.get("fail_first") and runs == 1:
        raise RuntimeError(f"job {number} fails on its first run")
    time.sleep(float(payload.get("sleep", 0)))
    client.sadd(f"{prefix}:done", number)
    client.hset(f"{prefix}:by", str(number), os.getpid())
