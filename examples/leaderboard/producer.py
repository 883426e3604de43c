"""A game backend that scores points with redis-py: ZINCRBY on Herald.

Every 100 ms a random player scores 1 to 50 points in the sorted set
`game:scores`, the plain redis-py way (as with Redis). Herald pushes the
changed top N to every browser following the leaderboard.

    python3 producer.py --port 6380 --key game:scores
"""

import argparse
import random
import time

import redis

PLAYERS = [
    "ada", "alan", "barbara", "claude", "donald", "edsger", "frances", "grace",
    "john", "ken", "leslie", "linus", "margaret", "niklaus", "radia", "shafi",
    "tim", "tony", "vint", "whitfield",
]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=6380, help="Herald's RESP port")
    ap.add_argument("--key", default="game:scores")
    ap.add_argument("--interval", type=float, default=0.1, help="seconds between scores")
    args = ap.parse_args()

    r = redis.Redis(host=args.host, port=args.port, decode_responses=True)
    print(f"producer: ZINCRBY {args.key} every {args.interval:g} s on {args.host}:{args.port}", flush=True)
    # Some players are better than others: the top ten moves, but not at random.
    skill = {p: random.uniform(0.5, 1.5) for p in PLAYERS}
    while True:
        player = random.choice(PLAYERS)
        points = max(1, round(random.randint(1, 50) * skill[player]))
        try:
            r.zincrby(args.key, points, player)
        except redis.ResponseError as err:
            print(f"producer: Herald refused ZINCRBY: {err}; retrying in 1 s", flush=True)
            time.sleep(1)
        except redis.ConnectionError as err:
            print(f"producer: {err}; retrying in 1 s", flush=True)
            time.sleep(1)
        time.sleep(args.interval)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        pass
