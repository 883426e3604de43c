"""A backend that publishes its metrics to Herald with redis-py, once a second.

Nothing Herald-specific here: this is the plain redis-py pub/sub publisher,
pointed at Herald's RESP port. Every browser subscribed to the channel gets
each message as a JSON object: {"cpu", "mem", "rps", "ts"}.

    python3 publisher.py --port 6380 --channel metrics:server1
"""

import argparse
import json
import math
import random
import time

import redis


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=6380, help="Herald's RESP port")
    ap.add_argument("--channel", default="metrics:server1")
    ap.add_argument("--interval", type=float, default=1.0, help="seconds between messages")
    args = ap.parse_args()

    r = redis.Redis(host=args.host, port=args.port)
    cpu, mem = 35.0, 2300.0  # percent, MiB: random walks around these
    t0 = time.time()
    print(f"publisher: metrics every {args.interval:g} s on {args.channel} "
          f"to {args.host}:{args.port}", flush=True)
    while True:
        t = time.time() - t0
        cpu = min(100.0, max(2.0, cpu + random.uniform(-6, 6) + (35 - cpu) * 0.1))
        mem = min(8192.0, max(512.0, mem + random.uniform(-40, 45)))
        rps = max(0.0, 420 + 160 * math.sin(t / 15) + random.gauss(0, 25))
        metrics = {
            "cpu": round(cpu, 1),
            "mem": round(mem),
            "rps": round(rps),
            "ts": int(time.time() * 1000),
        }
        try:
            r.publish(args.channel, json.dumps(metrics))
        except redis.ConnectionError as err:
            # Herald restarting: keep trying, the browsers will pick up again.
            print(f"publisher: {err}; retrying", flush=True)
        time.sleep(args.interval)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        pass
