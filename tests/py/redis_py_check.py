"""redis-py against Herald, unchanged, in RESP2 and RESP3.

Run by tests/real_clients.rs: python3 redis_py_check.py PORT
Prints 'ok' and exits 0 when every check passes.
"""
import sys
import time

import redis

PORT = int(sys.argv[1])


def wait_message(ps, timeout=5.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        m = ps.get_message(ignore_subscribe_messages=True, timeout=0.1)
        if m is not None:
            return m
    raise AssertionError("no message in time")


def check(protocol):
    r = redis.Redis(host="127.0.0.1", port=PORT, protocol=protocol)
    assert r.ping() is True
    assert r.echo("hi") == b"hi"
    ps = r.pubsub()
    ps.subscribe("news")
    ps.psubscribe("invalidate:*")
    # Wait for the confirmations so the publishes below are seen.
    confirmations = 0
    deadline = time.time() + 5
    while confirmations < 2 and time.time() < deadline:
        m = ps.get_message(timeout=0.1)
        if m and m["type"] in ("subscribe", "psubscribe"):
            confirmations += 1
    assert confirmations == 2, confirmations
    pub = redis.Redis(host="127.0.0.1", port=PORT, protocol=protocol)
    assert pub.publish("news", "hello") == 1
    m = wait_message(ps)
    assert m["type"] == "message" and m["channel"] == b"news" and m["data"] == b"hello", m
    assert pub.publish("invalidate:user:42", "user:42") == 1
    m = wait_message(ps)
    assert m["type"] == "pmessage" and m["pattern"] == b"invalidate:*", m
    assert m["channel"] == b"invalidate:user:42" and m["data"] == b"user:42", m
    assert pub.pubsub_numsub("news") == [(b"news", 1)]
    assert pub.pubsub_numpat() == 1
    assert b"news" in pub.pubsub_channels()
    ps.unsubscribe("news")
    ps.punsubscribe()
    ps.close()
    # The seed article's listener style: a thread running a handler.
    got = []
    ps2 = r.pubsub()
    ps2.subscribe(**{"chat:room1": lambda msg: got.append(msg["data"])})
    t = ps2.run_in_thread(sleep_time=0.01)
    deadline = time.time() + 5
    while pub.pubsub_numsub("chat:room1")[0][1] < 1 and time.time() < deadline:
        time.sleep(0.01)
    pub.publish("chat:room1", "hey")
    while not got and time.time() < deadline:
        time.sleep(0.01)
    t.stop()
    assert got == [b"hey"], got
    pub.close()
    r.close()


check(2)
check(3)
print("ok")
