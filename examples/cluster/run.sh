#!/usr/bin/env bash
# The cluster example: one redis-server and three Herald nodes on it
# (--engine redis://…), each with the chat example's configuration and its
# own chat page. Chat pages opened on different nodes talk to each other
# and show each other in presence. Run from the repository root:
#
#     examples/cluster/run.sh
#
# then open two of the printed URLs (two nodes) with two nicknames.
# Ports: REDIS_PORT (6390); for node N (1-3) RESP_PORT_N (6380+N),
# HTTP_PORT_N (8080+N) and WEB_PORT_N (8010+N). CHAT_JWT_SECRET: the HS256
# secret every node shares (default: a random one); CLUSTER_API_KEY: the
# nodes' --api-key (default: a random one), for GET /api/nodes.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/../common/lib.sh"
chat="$here/../chat"
REDIS_PORT="${REDIS_PORT:-6390}"
CHAT_JWT_SECRET="${CHAT_JWT_SECRET:-$(python3 -c 'import secrets; print(secrets.token_hex(32))')}"
CLUSTER_API_KEY="${CLUSTER_API_KEY:-$(python3 -c 'import secrets; print(secrets.token_hex(16))')}"
export CHAT_JWT_SECRET

if ! command -v redis-server >/dev/null 2>&1; then
  echo "redis-server is needed (apt-get install redis-server)" >&2
  exit 1
fi
# A throwaway Redis: nothing saved, gone with the example. Never another
# Redis already on the port: the nodes would write into it (the example's
# own redis-server fails to bind, yet the port answers).
if (exec 3<>"/dev/tcp/127.0.0.1/$REDIS_PORT") 2>/dev/null; then
  echo "port $REDIS_PORT is taken (another Redis?): choose another with REDIS_PORT" >&2
  exit 1
fi
start redis redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
  --dir "$work" --daemonize no --loglevel warning --logfile "$work/redis.log"
wait_port "$REDIS_PORT"

urls=()
origins=""
for n in 1 2 3; do
  web_var="WEB_PORT_$n"
  origins+="http://127.0.0.1:${!web_var:-$((8010 + n))},http://localhost:${!web_var:-$((8010 + n))},"
done
origins="${origins%,}"

for n in 1 2 3; do
  resp_var="RESP_PORT_$n" http_var="HTTP_PORT_$n" web_var="WEB_PORT_$n"
  RESP_PORT="${!resp_var:-$((6380 + n))}"
  HTTP_PORT="${!http_var:-$((8080 + n))}"
  web="${!web_var:-$((8010 + n))}"
  LOG_NAME="node$n" start_herald --config "$chat/chat.toml" --jwt-hmac-secret "$CHAT_JWT_SECRET" \
    --api-key "$CLUSTER_API_KEY" --allowed-origins "$origins" \
    --engine "redis://127.0.0.1:$REDIS_PORT" --node-name "node$n"
  start "web$n" python3 "$chat/server.py" --dir "$chat/web" --port "$web" --herald "http://127.0.0.1:$HTTP_PORT"
  wait_port "$web"
  urls+=("node$n: open http://127.0.0.1:$web/ (Herald http://127.0.0.1:$HTTP_PORT)")
  last_http="$HTTP_PORT"
done

echo
printf '%s\n' "${urls[@]}"
echo "The live nodes: curl -H 'X-API-Key: $CLUSTER_API_KEY' http://127.0.0.1:$last_http/api/nodes"
echo "Open two of the pages above with two nicknames (Ctrl-C stops the example)"
run_until_done
