# Sourced by the examples' run.sh scripts (bash): find or build Herald,
# start it and the example's own processes in the background, and stop every
# one of them when the script ends (Ctrl-C, SIGTERM, or one of them exiting).
#
# Ports come from the environment: RESP_PORT (default 6380) and HTTP_PORT
# (default 8080) for Herald; each example adds its own (WEB_PORT).
# HERALD_BIN picks a Herald binary; otherwise the newest of target/release
# and target/debug, built with `cargo build --release` when neither exists.

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
common="$repo/examples/common"
RESP_PORT="${RESP_PORT:-6380}"
HTTP_PORT="${HTTP_PORT:-8080}"
work="$(mktemp -d "${TMPDIR:-/tmp}/herald-example.XXXXXX")"
pids=()

cleanup() {
  trap - EXIT INT TERM
  local pid
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
# `exit` runs the EXIT trap.
trap 'exit 130' INT
trap 'exit 143' TERM

herald_bin() {
  if [[ -n "${HERALD_BIN:-}" ]]; then
    echo "$HERALD_BIN"
    return
  fi
  local target="${CARGO_TARGET_DIR:-$repo/target}"
  local release="$target/release/herald" debug="$target/debug/herald"
  if [[ -x "$release" && ( ! -x "$debug" || "$release" -nt "$debug" ) ]]; then
    echo "$release"
  elif [[ -x "$debug" ]]; then
    echo "$debug"
  else
    echo "building Herald: cargo build --release (once)" >&2
    (cd "$repo" && cargo build --release --bin herald) >&2 || exit 1
    echo "$release"
  fi
}

# start_herald [HERALD OPTIONS...]: starts Herald on RESP_PORT and HTTP_PORT
# and waits until it listens. Its log goes to $work/${LOG_NAME:-herald}.log.
start_herald() {
  local bin log="$work/${LOG_NAME:-herald}.log"
  bin="$(herald_bin)" || exit 1
  "$bin" --resp-addr "127.0.0.1:$RESP_PORT" --http-addr "127.0.0.1:$HTTP_PORT" "$@" >"$log" 2>&1 &
  pids+=($!)
  local i
  for i in $(seq 100); do
    if grep -q 'herald listening' "$log"; then
      echo "Herald: RESP on 127.0.0.1:$RESP_PORT, HTTP on http://127.0.0.1:$HTTP_PORT ($bin)"
      return 0
    fi
    kill -0 "${pids[-1]}" 2>/dev/null || break
    sleep 0.1
  done
  echo "Herald did not start:" >&2
  cat "$log" >&2
  exit 1
}

# start NAME COMMAND...: runs COMMAND in the background, stopped at the end.
start() {
  local name="$1"
  shift
  "$@" &
  pids+=($!)
  echo "$name: started (pid $!)"
}

# wait_port PORT: waits (at most 10 s) until something listens on PORT.
wait_port() {
  local i
  for i in $(seq 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "nothing listens on port $1" >&2
  exit 1
}

# run_until_done: keeps the script alive until Ctrl-C or until one of the
# processes exits (then the others are stopped too).
run_until_done() {
  local rc=0
  wait -n "${pids[@]}" || rc=$?
  echo "a process of the example exited (status $rc); stopping the others" >&2
  exit "$rc"
}
