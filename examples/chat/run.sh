#!/usr/bin/env bash
# The chat example: Herald with chat.toml (rooms with history, presence,
# join/leave) and JWT authentication, and a web server for the page and its
# token endpoint. Run from the repository root:
#
#     examples/chat/run.sh
#
# then open the printed URL in two browser windows with two nicknames.
# Ports: RESP_PORT (6380) and HTTP_PORT (8080) for Herald, WEB_PORT (8001)
# for the page. CHAT_JWT_SECRET: the HS256 secret (default: a random one).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/../common/lib.sh"
WEB_PORT="${WEB_PORT:-8001}"
CHAT_JWT_SECRET="${CHAT_JWT_SECRET:-$(python3 -c 'import secrets; print(secrets.token_hex(32))')}"
export CHAT_JWT_SECRET

start_herald --config "$here/chat.toml" --jwt-hmac-secret "$CHAT_JWT_SECRET" \
  --allowed-origins "http://127.0.0.1:$WEB_PORT,http://localhost:$WEB_PORT"
start web python3 "$here/server.py" --dir "$here/web" --port "$WEB_PORT" --herald "http://127.0.0.1:$HTTP_PORT"
wait_port "$WEB_PORT"
echo
echo "Open http://127.0.0.1:$WEB_PORT/ in two windows (Ctrl-C stops the example)"
run_until_done
