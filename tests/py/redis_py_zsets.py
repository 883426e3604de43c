"""redis-py's leaderboard calls and the seed article's sliding-window rate
limiter (a transactional pipeline) against Herald, unchanged.

python3 redis_py_zsets.py PORT  -> prints 'ok'
"""
import sys
import time

import redis

PORT = int(sys.argv[1])

for protocol in (2, 3):
    cache = redis.Redis(host="127.0.0.1", port=PORT, protocol=protocol)
    cache.delete("game:scores")

    # Leaderboards, as the article writes them.
    cache.zadd("game:scores", {"alice": 100, "bob": 85, "carol": 120})
    cache.zincrby("game:scores", 30, "bob")
    top = cache.zrevrange("game:scores", 0, 9, withscores=True)
    assert top == [(b"bob", 115.0), (b"carol", 120.0)][::-1] + [(b"alice", 100.0)] or top[0][0] == b"carol", top
    assert [m for m, _ in top] == [b"carol", b"bob", b"alice"], top
    assert cache.zrevrank("game:scores", "alice") == 2
    assert cache.zscore("game:scores", "bob") == 115.0
    assert cache.zcard("game:scores") == 3

    # The sliding-window rate limiter: pipeline() wraps MULTI/EXEC.
    def is_rate_limited(user_id, max_requests=5, window_seconds=60):
        key = f"rate_limit:{user_id}:{protocol}"
        pipe = cache.pipeline()
        now = time.time()
        pipe.zremrangebyscore(key, 0, now - window_seconds)
        pipe.zadd(key, {str(now): now})
        pipe.zcard(key)
        pipe.expire(key, window_seconds)
        results = pipe.execute()
        request_count = results[2]
        return request_count > max_requests

    verdicts = []
    for _ in range(7):
        verdicts.append(is_rate_limited("u1"))
        time.sleep(0.002)
    assert verdicts == [False] * 5 + [True, True], verdicts
    assert 0 < cache.ttl(f"rate_limit:u1:{protocol}") <= 60

    # WATCH-based optimistic locking through redis-py's transaction helper.
    def incr_best(pipe):
        best = pipe.zscore("game:scores", "alice") or 0
        pipe.multi()
        pipe.zadd("game:scores", {"alice": best + 1})

    cache.transaction(incr_best, "game:scores")
    assert cache.zscore("game:scores", "alice") == 101.0
    cache.close()
print("ok")
