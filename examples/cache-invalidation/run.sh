#!/usr/bin/env bash
# The cache-invalidation example: Herald, then two app servers with local
# caches, one in Python (redis-py) and one in Rust (the redis crate), both
# subscribed to invalidate:* on Herald's RESP port, driven through a short
# scenario that prints what each one says. Run from the repository root:
#
#     examples/cache-invalidation/run.sh
#
# The first run builds the Rust app (about a minute). Ports: RESP_PORT
# (6380) and HTTP_PORT (8080) for Herald.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/../common/lib.sh"

echo "building the Rust app (cargo build; the first time takes a minute)"
cargo build --quiet --manifest-path "$here/rust-app/Cargo.toml" --target-dir "$here/rust-app/target"
start_herald
python3 "$here/demo.py" --redis "redis://127.0.0.1:$RESP_PORT" --rust-app "$here/rust-app/target/debug/cache-app"
