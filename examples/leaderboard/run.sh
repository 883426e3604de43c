#!/usr/bin/env bash
# The live leaderboard example: Herald, a redis-py producer scoring random
# players with ZINCRBY on game:scores every 100 ms, and a web server for the
# page that follows the top 10. Run from the repository root:
#
#     examples/leaderboard/run.sh
#
# Ports: RESP_PORT (6380) and HTTP_PORT (8080) for Herald, WEB_PORT (8002)
# for the page. Ctrl-C stops everything.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/../common/lib.sh"
WEB_PORT="${WEB_PORT:-8002}"

start_herald --allowed-origins "http://127.0.0.1:$WEB_PORT,http://localhost:$WEB_PORT"
start producer python3 "$here/producer.py" --port "$RESP_PORT" --key game:scores
start web python3 "$common/webserver.py" --dir "$here/web" --port "$WEB_PORT" --herald "http://127.0.0.1:$HTTP_PORT"
wait_port "$WEB_PORT"
echo
echo "Open http://127.0.0.1:$WEB_PORT/ (Ctrl-C stops the example)"
run_until_done
