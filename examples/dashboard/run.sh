#!/usr/bin/env bash
# The live dashboard example: Herald, a redis-py backend publishing metrics
# every second on metrics:server1, and a web server for the page that draws
# them. Run from the repository root:
#
#     examples/dashboard/run.sh
#
# Ports: RESP_PORT (6380) and HTTP_PORT (8080) for Herald, WEB_PORT (8000)
# for the page; INTERVAL (1) seconds between metrics. Ctrl-C stops everything.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/../common/lib.sh"
WEB_PORT="${WEB_PORT:-8000}"

# The page comes from another origin than Herald's: allow it to open WebSockets.
start_herald --allowed-origins "http://127.0.0.1:$WEB_PORT,http://localhost:$WEB_PORT"
start publisher python3 "$here/publisher.py" --port "$RESP_PORT" --channel metrics:server1 --interval "${INTERVAL:-1}"
start web python3 "$common/webserver.py" --dir "$here/web" --port "$WEB_PORT" --herald "http://127.0.0.1:$HTTP_PORT"
wait_port "$WEB_PORT"
echo
echo "Open http://127.0.0.1:$WEB_PORT/ (Ctrl-C stops the example)"
run_until_done
