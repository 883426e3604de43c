"""redis-py's stream calls against Herald, unchanged (RESP2 and RESP3).

python3 redis_py_streams.py PORT  -> prints 'ok'
"""
import sys
import threading
import time

import redis

PORT = int(sys.argv[1])

for protocol in (2, 3):
    r = redis.Redis(host="127.0.0.1", port=PORT, protocol=protocol, decode_responses=True)
    key = f"orders:{protocol}"
    r.delete(key)
    r.xgroup_create(key, "billing", id="0", mkstream=True)
    assert r.xlen(key) == 0
    first = r.xadd(key, {"order": "1", "total": "9.99"})
    r.xadd(key, {"order": "2", "total": "5.00"}, maxlen=1000, approximate=True)
    assert r.xlen(key) == 2
    got = r.xreadgroup("billing", "worker-1", {key: ">"}, count=10, block=5000)
    entries = got[key][0] if isinstance(got, dict) else got[0][1]
    assert [e[1]["order"] for e in entries] == ["1", "2"], got
    assert r.xack(key, "billing", *[e[0] for e in entries]) == 2
    assert r.xpending(key, "billing")["pending"] == 0

    # A blocking read woken by another client's XADD.
    def later():
        time.sleep(0.2)
        redis.Redis(host="127.0.0.1", port=PORT).xadd(key, {"order": "3"})

    threading.Thread(target=later).start()
    t = time.time()
    got = r.xreadgroup("billing", "worker-1", {key: ">"}, block=5000)
    assert time.time() - t < 4, "blocked too long"
    entries = got[key][0] if isinstance(got, dict) else got[0][1]
    assert entries[0][1]["order"] == "3", got
    # A blocking read that times out.
    assert not r.xreadgroup("billing", "worker-1", {key: ">"}, block=100)
    # Redelivery after a consumer dies: XAUTOCLAIM.
    claimed = r.xautoclaim(key, "billing", "worker-2", min_idle_time=0, start_id="0-0")
    assert claimed[1][0][1]["order"] == "3", claimed
    assert r.xrange(key, first, first)[0][1]["total"] == "9.99"
    assert r.xrevrange(key, count=1)[0][1]["order"] == "3"
    info = r.xinfo_stream(key)
    assert info["length"] == 3 and info["groups"] == 1, info
    assert r.xread({key: "0"}, count=1)
    assert r.xtrim(key, maxlen=1, approximate=False) == 2
    r.close()
print("ok")
