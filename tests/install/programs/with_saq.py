"""The saq extra: storeroom's SAQ adapter for Redis and PostgreSQL queues.

Built without a connection for both; when the test passes a Redis URL in STOREROOM_TEST_REDIS,
a job is also enqueued and run by a SAQ worker in this process.
"""

import asyncio
import os
import uuid

import saq

from storeroom import StorageRegistry
from storeroom.backends.obstore import ObstoreBackend
from storeroom.jobs import job
from storeroom.jobs.saq import FUNCTION, SaqQueue, worker_settings

name = f"install-{uuid.uuid4().hex[:8]}"
for url in ("redis://127.0.0.1:9/0", "postgresql://user@127.0.0.1:9/db"):
    settings = worker_settings(url, name=name)  # no connection is opened
    assert isinstance(settings["queue"], saq.Queue) and settings["queue"].name == name
    assert [function for function, _ in settings["functions"]] == [FUNCTION]
    SaqQueue(url, name=name).close()

registry = StorageRegistry()
done = registry.register_backend(ObstoreBackend("jobs", "memory://"))


@job("install.touch")
def touch(payload: dict[str, str]) -> None:
    done.put(payload["path"], b"done")


def enqueue_and_wait(redis_url: str) -> bool:
    queue = SaqQueue(redis_url, name=name, timeout=30)
    try:
        queue.enqueue("install.touch", {"path": "made-by-the-worker.txt"})
        return queue.drain(timeout=60)
    finally:
        queue.close()


async def run_one_job(redis_url: str) -> None:
    """A worker (on this, the main, thread: SAQ installs signal handlers) runs the job."""
    worker = saq.Worker(**worker_settings(redis_url, name=name, concurrency=1, sweep=1))
    await worker.queue.connect()
    working = asyncio.create_task(worker.start())
    try:
        ran = await asyncio.to_thread(enqueue_and_wait, redis_url)
    finally:
        await worker.stop()
        await working
        await worker.queue.disconnect()
    assert ran, "the SAQ worker did not run the job within 60 s"


redis_url = os.environ.get("STOREROOM_TEST_REDIS")
if redis_url:
    asyncio.run(run_one_job(redis_url))
    assert done.get("made-by-the-worker.txt") == b"done"
    print("saq ok, job run on a worker")
else:
    print("saq ok")
