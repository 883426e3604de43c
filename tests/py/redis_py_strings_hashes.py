"""The seed article's caching, session and lock snippets with redis-py against
Herald, unchanged: cache-aside with SETEX/GET/DEL, the invalidation published
in the same MULTI as the write (cache entries and channel in one server),
sessions as hashes, and the SET NX EX lock with its WATCH/MULTI release.

python3 redis_py_strings_hashes.py PORT  -> prints 'ok'
"""
import json
import sys
import threading
import time
import uuid

import redis

PORT = int(sys.argv[1])


class FakeDb:
    """The article's `db`: counts queries so a cache hit is visible."""

    def __init__(self):
        self.users = {1: {"id": 1, "name": "ann"}}
        self.queries = 0

    def query(self, sql, user_id):
        self.queries += 1
        return dict(self.users[user_id])

    def execute(self, sql, user_id, data):
        self.users[user_id].update(data)


for protocol in (2, 3):
    cache = redis.Redis(host="127.0.0.1", port=PORT, db=0, protocol=protocol)
    cache.flushall()
    db = FakeDb()

    # --- Caching: the obvious use case (verbatim) ---
    def get_user(user_id):
        # Try cache first
        cached = cache.get(f"user:{user_id}")
        if cached:
            return json.loads(cached)
        # Cache miss: fetch from database
        user = db.query("SELECT * FROM users WHERE id = ?", user_id)
        # Store in cache with 1-hour expiration
        cache.setex(
            f"user:{user_id}",
            3600,  # TTL in seconds
            json.dumps(user)
        )
        return user

    assert get_user(1) == {"id": 1, "name": "ann"}
    assert get_user(1) == {"id": 1, "name": "ann"}
    assert db.queries == 1, db.queries
    assert 3590 < cache.ttl("user:1") <= 3600

    # Cache-aside with explicit invalidation (verbatim).
    def update_user(user_id, data):
        # Update database
        db.execute("UPDATE users SET ... WHERE id = ?", user_id, data)
        # Invalidate cache
        cache.delete(f"user:{user_id}")

    update_user(1, {"name": "bob"})
    assert get_user(1)["name"] == "bob"
    assert db.queries == 2

    # The invalidation broadcast to the other servers, in the same MULTI
    # as the delete: a subscriber hears it only once the entry is gone.
    heard = []
    listener = cache.pubsub()
    listener.subscribe("cache-invalidation")
    assert listener.get_message(timeout=5)["type"] == "subscribe"

    def listen():
        for message in listener.listen():
            if message["type"] == "message":
                key = message["data"].decode()
                heard.append((key, cache.exists(key)))
                return

    t = threading.Thread(target=listen)
    t.start()

    def update_user_and_broadcast(user_id, data):
        db.execute("UPDATE users SET ... WHERE id = ?", user_id, data)
        pipe = cache.pipeline(transaction=True)
        pipe.delete(f"user:{user_id}")
        pipe.publish("cache-invalidation", f"user:{user_id}")
        deleted, receivers = pipe.execute()
        return deleted, receivers

    assert update_user_and_broadcast(1, {"name": "cat"}) == (1, 1)
    t.join(5)
    assert heard == [("user:1", 0)], heard
    listener.close()
    assert get_user(1)["name"] == "cat"

    # Write-through (verbatim).
    def update_user_write_through(user_id, data):
        db.execute("UPDATE users SET ... WHERE id = ?", user_id, data)
        user = db.query("SELECT * FROM users WHERE id = ?", user_id)
        cache.setex(f"user:{user_id}", 3600, json.dumps(user))

    update_user_write_through(1, {"name": "dan"})
    assert json.loads(cache.get("user:1"))["name"] == "dan"

    # Cache key versioning.
    CACHE_VERSION = "v2"
    key = f"{CACHE_VERSION}:user:1"
    assert cache.get(key) is None
    cache.set(key, "x", ex=60)
    assert cache.get(key) == b"x"

    # --- Sessions, as hashes ---
    cache.hset("session:abc", mapping={"user_id": "1", "csrf": "t0k", "views": 0})
    cache.expire("session:abc", 1800)
    assert cache.hincrby("session:abc", "views", 1) == 1
    assert cache.hincrbyfloat("session:abc", "score", 2.5) == 2.5
    assert cache.hgetall("session:abc") == {
        b"user_id": b"1",
        b"csrf": b"t0k",
        b"views": b"1",
        b"score": b"2.5",
    }
    assert cache.hget("session:abc", "csrf") == b"t0k"
    assert cache.hmget("session:abc", ["user_id", "nope"]) == [b"1", None]
    assert cache.hexists("session:abc", "csrf")
    assert cache.hlen("session:abc") == 4
    assert cache.ttl("session:abc") > 1700
    assert cache.type("session:abc") == b"hash"
    assert sorted(cache.hkeys("session:abc")) == [b"csrf", b"score", b"user_id", b"views"]
    cursor, fields = cache.hscan("session:abc", 0)
    assert cursor == 0 and len(fields) == 4
    assert cache.hrandfield("session:abc") in (b"user_id", b"csrf", b"views", b"score")
    assert cache.hdel("session:abc", "csrf", "nope") == 1

    # Counters.
    assert cache.incr("page:views") == 1
    assert cache.incrby("page:views", 10) == 11
    assert cache.incrbyfloat("price", 10.5) == 10.5
    assert cache.mset({"a": "1", "b": "2"})
    assert cache.mget("a", "b", "missing") == [b"1", b"2", None]
    try:
        cache.incr("session:abc")
        raise AssertionError("INCR on a hash")
    except redis.ResponseError as e:
        assert str(e).startswith("WRONGTYPE"), e
    cache.close()

    # --- Distributed locks (verbatim; the lock compares str tokens) ---
    cache = redis.Redis(host="127.0.0.1", port=PORT, protocol=protocol, decode_responses=True)

    def acquire_lock(lock_name, timeout=10):
        lock_key = f"lock:{lock_name}"
        identifier = str(uuid.uuid4())
        # Set if not exists, with expiration
        acquired = cache.set(lock_key, identifier, nx=True, ex=timeout)
        return identifier if acquired else None

    def release_lock(lock_name, identifier):
        lock_key = f"lock:{lock_name}"
        # Only delete if we own the lock
        pipe = cache.pipeline(True)
        while True:
            try:
                pipe.watch(lock_key)
                if pipe.get(lock_key) == identifier:
                    pipe.multi()
                    pipe.delete(lock_key)
                    pipe.execute()
                    return True
                pipe.unwatch()
                return False
            except redis.WatchError:
                # Retry if modified
                pass

    token = acquire_lock("job-42")
    assert token is not None
    assert acquire_lock("job-42") is None, "the lock is held"
    assert 0 < cache.ttl("lock:job-42") <= 10
    assert release_lock("job-42", "someone-else") is False
    assert cache.exists("lock:job-42") == 1
    assert release_lock("job-42", token) is True
    assert cache.exists("lock:job-42") == 0
    token2 = acquire_lock("job-42")
    assert token2 is not None and token2 != token

    # A holder whose lock expired cannot release the next holder's lock.
    short = cache.set("lock:short", "old", nx=True, px=50)
    assert short
    time.sleep(0.1)
    newer = acquire_lock("short")
    assert newer is not None
    assert release_lock("short", "old") is False
    assert cache.get("lock:short") == newer
    cache.close()

print("ok")
