#!/usr/bin/env bash
# A real Flower deployment on this machine: one SuperLink and N SuperNodes on 127.0.0.1, each SuperNode
# given its partition (--node-config "partition-id=i num-partitions=N"), then `flwr run` of flower_app/
# against it, then a clean stop of exactly the processes this script started (and their children).
#
#   scripts/deploy_local.sh [-n NODES] [-p PORT] [-w WORKDIR] [-c CREDS_DIR] [-t TIMEOUT] [-- RUN_CONFIG...]
#
#   -n  SuperNodes (default 3; must equal data.num_clients unless min-available-nodes says otherwise)
#   -p  SuperLink port (default 9093); SuperNode i uses PORT+1+i for its local runtime API
#   -w  work folder for logs, FLWR_HOME and pids (default: a new temporary folder)
#   -c  credentials from `python -m potara.flower.certs DIR --nodes N`: TLS everywhere and SuperNode
#       authentication (each SuperNode registered with `flwr supernode register`); without -c: --insecure
#   -t  seconds before the run is abandoned (default 1800)
#   after --: Flower run-config entries, e.g. -- "overrides='fed.rounds=2 data.num_clients=3'" "out-dir='/tmp/out'"
#
# Environment: VENV (default .venv next to this script's repo) provides flower-superlink, flower-supernode, flwr.
# The exit status is flwr run's (124 on timeout). Logs: WORKDIR/superlink.log, WORKDIR/supernode_<i>.log, WORKDIR/run.log.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
NODES=3 PORT=9093 WORKDIR="" CREDS="" TIMEOUT=1800
while getopts "n:p:w:c:t:h" opt; do
  case "$opt" in
    n) NODES="$OPTARG" ;; p) PORT="$OPTARG" ;; w) WORKDIR="$OPTARG" ;; c) CREDS="$OPTARG" ;; t) TIMEOUT="$OPTARG" ;;
    *) sed -n '2,20p' "$0"; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
[[ "${1:-}" == "--" ]] && shift
RUN_CONFIG=("$@")

WORKDIR="${WORKDIR:-$(mktemp -d -t potara-flower-XXXXXX)}"
mkdir -p "$WORKDIR/flwr_home"
WORKDIR="$(cd "$WORKDIR" && pwd)"
export FLWR_HOME="$WORKDIR/flwr_home" PATH="$VENV/bin:$PATH"
PIDS=()

# Stop every process this script started: each runs in its own session (process group = its pid); the
# SuperLink's and SuperNodes' own children (SuperExec, ServerApp, ClientApps) are collected first.
descendants() { local c; for c in $(ps -o pid= --ppid "$1" 2>/dev/null); do echo "$c"; descendants "$c"; done; }
stop_all() {
  local pid all=()
  for pid in "${PIDS[@]}"; do all+=("$pid" $(descendants "$pid")); done
  ((${#all[@]})) || return 0
  for pid in "${PIDS[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || true; done
  kill -TERM "${all[@]}" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "${all[@]}" 2>/dev/null || break; sleep 0.2; done
  kill -KILL "${all[@]}" 2>/dev/null || true
  for pid in "${PIDS[@]}"; do kill -KILL -- "-$pid" 2>/dev/null || true; done
  echo "stopped ${#all[@]} processes" >&2
}
trap stop_all EXIT
trap 'exit 130' INT TERM

start() {  # start NAME CMD...: in its own session, logging to WORKDIR/NAME.log, pid in WORKDIR/NAME.pid
  local name="$1"; shift
  setsid "$@" >"$WORKDIR/$name.log" 2>&1 < /dev/null &
  PIDS+=("$!")
  echo "$!" > "$WORKDIR/$name.pid"
}

wait_port() {  # wait_port PORT SECONDS
  for _ in $(seq $(($2 * 5))); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.2
  done
  echo "nothing listens on 127.0.0.1:$1 after $2 s; see $WORKDIR/superlink.log" >&2
  return 1
}

if [[ -n "$CREDS" ]]; then
  CREDS="$(cd "$CREDS" && pwd)"
  LINK_TLS=(--ssl-ca-certfile "$CREDS/ca.crt" --ssl-certfile "$CREDS/server.pem" --ssl-keyfile "$CREDS/server.key"
            --enable-supernode-auth)
  CONNECTION="root-certificates = \"$CREDS/ca.crt\""
else
  LINK_TLS=(--insecure)
  CONNECTION="insecure = true"
fi
cat > "$FLWR_HOME/config.toml" <<TOML
[superlink]
default = "local-deployment"

[superlink.local-deployment]
address = "127.0.0.1:$PORT"
$CONNECTION
TOML

start superlink flower-superlink "${LINK_TLS[@]}" --disable-runtime-dependency-installation \
  --host 127.0.0.1 --port "$PORT"
wait_port "$PORT" 60

for ((i = 0; i < NODES; i++)); do
  if [[ -n "$CREDS" ]]; then
    flwr supernode register "$CREDS/node_$i.pub" local-deployment >> "$WORKDIR/register.log" 2>&1
    NODE_TLS=(--root-certificates "$CREDS/ca.crt" --auth-supernode-private-key "$CREDS/node_$i")
  else
    NODE_TLS=(--insecure)
  fi
  start "supernode_$i" flower-supernode "${NODE_TLS[@]}" --superlink "127.0.0.1:$PORT" \
    --port $((PORT + 1 + i)) --node-config "partition-id=$i num-partitions=$NODES"
done

ARGS=()
for entry in "${RUN_CONFIG[@]}"; do ARGS+=(--run-config "$entry"); done
set +e
timeout "$TIMEOUT" flwr run "$ROOT/flower_app" local-deployment --stream "${ARGS[@]}" 2>&1 | tee "$WORKDIR/run.log"
status=${PIPESTATUS[0]}
set -e
echo "flwr run exited with $status; logs in $WORKDIR" >&2
exit "$status"
