"""The seed article's job queue with redis-py against Herald, unchanged:
producers LPUSH JSON jobs onto a list, workers loop on BRPOP with a
timeout. Several workers and producers at once, RESP2 and RESP3: every job
is processed exactly once, and a BRPOP on an empty queue times out with
None.

The article's `"params": {...}` is a placeholder (a Python set holding
Ellipsis, which json cannot encode): real parameters stand in for it.

python3 redis_py_job_queue.py PORT  -> prints 'ok'
"""
import json
import sys
import threading
import time

import redis

PORT = int(sys.argv[1])
JOBS = 200
WORKERS = 4


class StopWorker(Exception):
    """Raised by process_job for the test's own stop job: ends a worker."""


for protocol in (2, 3):
    cache = redis.Redis(host="127.0.0.1", port=PORT, db=0, protocol=protocol)
    cache.flushall()
    processed = []
    lock = threading.Lock()

    def process_job(job):
        if job["task"] == "stop":
            raise StopWorker()
        with lock:
            processed.append(job["user_id"])

    def worker():
        cache = redis.Redis(host="127.0.0.1", port=PORT, db=0, protocol=protocol)
        try:
            # Consumer: process jobs (verbatim)
            while True:
                job_data = cache.brpop("job_queue", timeout=5)
                if job_data:
                    _, job_json = job_data
                    job = json.loads(job_json)
                    process_job(job)
        except StopWorker:
            pass

    def producer(first, count):
        cache = redis.Redis(host="127.0.0.1", port=PORT, db=0, protocol=protocol)
        for user_id in range(first, first + count):
            # Producer: add job to queue (verbatim, real params)
            cache.lpush("job_queue", json.dumps({
                "task": "send_email",
                "user_id": user_id,
                "params": {"template": "welcome"}
            }))

    workers = [threading.Thread(target=worker) for _ in range(WORKERS)]
    for w in workers:
        w.start()
    time.sleep(0.2)  # the workers are waiting on an empty queue

    producers = [
        threading.Thread(target=producer, args=(i * JOBS, JOBS)) for i in range(2)
    ]
    for p in producers:
        p.start()
    for p in producers:
        p.join()

    deadline = time.time() + 20
    while time.time() < deadline:
        with lock:
            if len(processed) >= 2 * JOBS:
                break
        time.sleep(0.05)
    with lock:
        assert sorted(processed) == list(range(2 * JOBS)), (
            protocol, len(processed), len(set(processed)))
    assert cache.llen("job_queue") == 0
    assert cache.exists("job_queue") == 0

    # A worker on an empty queue: BRPOP times out with None (a fractional
    # timeout here, to keep the test short).
    started = time.time()
    assert cache.brpop("job_queue", timeout=0.2) is None
    assert time.time() - started >= 0.19

    for _ in workers:
        cache.lpush("job_queue", json.dumps({"task": "stop", "user_id": -1}))
    for w in workers:
        w.join(timeout=10)
        assert not w.is_alive()

print("ok")
