"""An app server with a local in-memory cache, kept coherent through Herald.

The cache sits in front of a shared "database" (one file per key in a
directory). Every write publishes `invalidate:<key>` on Herald's RESP port;
every app server subscribes to `invalidate:*` and evicts the key when
another app wrote it, so that its next read goes to the database. The Rust
app (rust-app/) speaks the same protocol: the two evict each other's entries.

Driven one line at a time on stdin:

    get KEY            read through the cache
    set KEY VALUE      write the database, refresh the own cache, invalidate the others
    quit

and answers one line at a time on stdout:

    ready NAME                     subscribed to invalidate:*, commands welcome
    value KEY VALUE (cache|db)     a read, and where it came from
    missing KEY                    the database has no such key
    stored KEY                     a write, published to the other apps
    evicted KEY by ORIGIN          another app wrote KEY, which this one had cached
    error MESSAGE

    python3 python_app.py --redis redis://127.0.0.1:6380 --db /tmp/db --name python-app
"""

import argparse
import os
import sys
import threading
import time

import redis

out_lock = threading.Lock()


def say(line):
    # Two threads print (commands, evictions): one whole line at a time.
    with out_lock:
        print(line, flush=True)


def db_path(db, key):
    """A key's file: its UTF-8 bytes in hex (the Rust app uses the same rule)."""
    return os.path.join(db, key.encode().hex())


def db_read(db, key):
    try:
        with open(db_path(db, key), encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        return None


def db_write(db, key, value):
    # Through a temporary file and a rename: a reader in another process sees
    # the old value or the new one, never half of it.
    path = db_path(db, key)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(value)
    os.replace(tmp, path)


def main():
    ap = argparse.ArgumentParser(description="A cache-invalidation app server (Python, redis-py).")
    ap.add_argument("--redis", default="redis://127.0.0.1:6380", help="Herald's RESP URL")
    ap.add_argument("--db", default="cache-db", help="the shared database directory")
    ap.add_argument("--name", default="python-app", help="this app's name, sent with its invalidations")
    args = ap.parse_args()
    os.makedirs(args.db, exist_ok=True)

    r = redis.Redis.from_url(args.redis)
    cache = {}
    cache_lock = threading.Lock()

    def on_invalidate(message):
        key = message["channel"].decode().removeprefix("invalidate:")
        origin = message["data"].decode(errors="replace")
        if origin == args.name:
            return  # our own write already refreshed our cache
        with cache_lock:
            evicted = cache.pop(key, None) is not None
        if evicted:
            say(f"evicted {key} by {origin}")

    pubsub = r.pubsub()
    pubsub.psubscribe(**{"invalidate:*": on_invalidate})
    # Wait for the subscription's confirmation before saying `ready`: a write
    # made by another app after that line is never missed.
    deadline = time.monotonic() + 10
    while True:
        message = pubsub.get_message(timeout=1.0)
        if message is not None and message["type"] == "psubscribe":
            break
        if time.monotonic() > deadline:
            sys.exit("error: no confirmation of PSUBSCRIBE invalidate:* within 10 s")
    pubsub.ignore_subscribe_messages = True
    listener = pubsub.run_in_thread(sleep_time=0.05, daemon=True)
    say(f"ready {args.name}")

    for line in sys.stdin:
        parts = line.strip().split(" ", 2)
        cmd = parts[0]
        if cmd == "get" and len(parts) == 2:
            key = parts[1]
            with cache_lock:
                value = cache.get(key)
            if value is not None:
                say(f"value {key} {value} (cache)")
                continue
            value = db_read(args.db, key)
            if value is None:
                say(f"missing {key}")
                continue
            with cache_lock:
                cache[key] = value
            say(f"value {key} {value} (db)")
        elif cmd == "set" and len(parts) == 3:
            key, value = parts[1], parts[2]
            db_write(args.db, key, value)
            with cache_lock:
                cache[key] = value
            try:
                r.publish(f"invalidate:{key}", args.name)
            except redis.RedisError as err:
                say(f"error publishing invalidate:{key}: {err}")
                continue
            say(f"stored {key}")
        elif cmd == "quit":
            break
        elif cmd:
            say("error unknown command (get KEY | set KEY VALUE | quit)")

    listener.stop()


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        pass
