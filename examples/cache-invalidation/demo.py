"""Drives the two app servers through a cache-invalidation scenario and
prints what each one says. Exits 1 if an app does not answer as expected.

    python3 demo.py --redis redis://127.0.0.1:6380 --rust-app rust-app/target/debug/cache-app

Both apps share one database directory (a temporary one) and a key
`product:42`. A write on either app evicts the other's cached copy through
Herald, whatever the language on either side.
"""

import argparse
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))


class App:
    """One app server as a child process, one line in, lines out."""

    def __init__(self, name, argv):
        self.name = name
        self.lines = queue.Queue()
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, bufsize=1)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def expect(self, prefix, timeout=5.0):
        """The app's next line that starts with `prefix`. Eviction notices
        come whenever Herald delivers them, so other ones may come first;
        any other line is a failure."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                sys.exit(f"FAILED: {self.name} said nothing within {timeout} s (expected '{prefix}...')")
            if line is None:
                sys.exit(f"FAILED: {self.name} exited (expected '{prefix}...')")
            print(f"  {self.name:>10} < {line}", flush=True)
            if line.startswith(prefix):
                return line
            if not line.startswith("evicted "):
                sys.exit(f"FAILED: {self.name} said '{line}', expected '{prefix}...'")

    def do(self, command, answer):
        print(f"  {self.name:>10} > {command}", flush=True)
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self.expect(answer)

    def stop(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=3)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()


def main():
    ap = argparse.ArgumentParser(description="Run the cache-invalidation scenario.")
    ap.add_argument("--redis", default="redis://127.0.0.1:6380", help="Herald's RESP URL")
    ap.add_argument("--rust-app", default=os.path.join(HERE, "rust-app", "target", "debug", "cache-app"))
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="cache-db-") as db:
        py = App("python", [sys.executable, os.path.join(HERE, "python_app.py"),
                            "--redis", args.redis, "--db", db, "--name", "python-app"])
        rs = App("rust", [args.rust_app, "--redis", args.redis, "--db", db, "--name", "rust-app"])
        try:
            py.expect("ready")
            rs.expect("ready")
            key = "product:42"

            print("\n1. Python writes; Rust reads it from the database, then from its cache.")
            py.do(f"set {key} Blue mug, 12 EUR", f"stored {key}")
            rs.do(f"get {key}", f"value {key} Blue mug, 12 EUR (db)")
            rs.do(f"get {key}", f"value {key} Blue mug, 12 EUR (cache)")

            print("\n2. Python writes again: Herald carries invalidate:product:42 to Rust, which evicts its copy.")
            py.do(f"set {key} Blue mug, 9 EUR", f"stored {key}")
            rs.expect(f"evicted {key} by python-app")
            rs.do(f"get {key}", f"value {key} Blue mug, 9 EUR (db)")

            print("\n3. And the other way round: Rust writes, Python evicts.")
            py.do(f"get {key}", f"value {key} Blue mug, 9 EUR (cache)")
            rs.do(f"set {key} Blue mug, sold out", f"stored {key}")
            py.expect(f"evicted {key} by rust-app")
            py.do(f"get {key}", f"value {key} Blue mug, sold out (db)")
        finally:
            py.stop()
            rs.stop()
    print("\nOK: each write evicted the other app's cached copy, across languages.")


if __name__ == "__main__":
    main()
