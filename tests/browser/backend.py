"""A redis-py backend for the browser tests: subscribes to a channel,
prints what browsers publish, and answers with its own publish.

python3 backend.py PORT PASSWORD CHANNEL
"""
import json
import sys

import redis

port, password, channel = int(sys.argv[1]), sys.argv[2], sys.argv[3]
r = redis.Redis(host="127.0.0.1", port=port, password=password)
p = r.pubsub(ignore_subscribe_messages=True)
p.subscribe(channel)
p.get_message(timeout=1.0)
print("ready", flush=True)
while True:
    m = p.get_message(timeout=10.0)
    if m is None:
        print("timeout", flush=True)
        sys.exit(1)
    data = json.loads(m["data"])
    print("got " + json.dumps(data), flush=True)
    if data.get("from") == "browser":
        r.publish(channel, json.dumps({"from": "backend", "text": "hello browser"}))
        print("replied", flush=True)
        break
