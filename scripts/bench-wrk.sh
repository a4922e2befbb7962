#!/usr/bin/env bash
# Secret reads against /v1/health with an external, lean HTTPS client (wrk, one thread),
# on the release server binary with its embedded database: the same ratio as
# `cargo bench -p strongbox-server --bench api`, without the in-process client's cost.
# Each row also gives the server's own CPU per request (from /proc/PID/stat), which
# moves far less from run to run than the rates; the last row is durable writes (new
# versions of 32 secrets) from 32 connections.
#
#   ./scripts/bench-wrk.sh [SECONDS]
#   STRONGBOX_BIN=/path/to/strongbox ./scripts/bench-wrk.sh   # another build, for A/B
set -euo pipefail
# Another build, resolved before the cd below.
if [ -n "${STRONGBOX_BIN:-}" ]; then STRONGBOX_BIN=$(realpath "$STRONGBOX_BIN"); fi
cd "$(dirname "$0")/.."
SECS=${1:-4}
if ! command -v wrk >/dev/null; then
  SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
  $SUDO apt-get install -y wrk >/dev/null
fi
if [ -z "${STRONGBOX_BIN:-}" ]; then
  cargo build --release -p strongbox-server --bins
fi
BIN=${STRONGBOX_BIN:-target/release/strongbox}
WORK=$(mktemp -d)
trap 'kill $SERVER_PID 2>/dev/null || true; rm -rf "$WORK"' EXIT
"$BIN" server --dev --listen 127.0.0.1:0 > "$WORK/dev.out" 2> "$WORK/dev.err" &
SERVER_PID=$!
for _ in $(seq 50); do [ "$(wc -l < "$WORK/dev.out")" -ge 3 ] && break; sleep 0.1; done
eval "$(cat "$WORK/dev.out")"
curl -sS --fail --cacert "$STRONGBOX_CACERT" -H "Authorization: Bearer $STRONGBOX_TOKEN" \
  -H 'Content-Type: application/json' \
  -d '{"name":"bench/s","secret_data":"{\"AccountName\":\"app_user\",\"AccountPassword\":\"Zq3#v9LmP2@wX8!rT5yKc1&nB7uE4hJ6\"}"}' \
  "$STRONGBOX_ADDR/v1/secrets" >/dev/null
for i in $(seq 0 31); do
  curl -sS --fail --cacert "$STRONGBOX_CACERT" -H "Authorization: Bearer $STRONGBOX_TOKEN" \
    -H 'Content-Type: application/json' -d "{\"name\":\"bench/w$i\",\"secret_data\":\"x\"}" \
    "$STRONGBOX_ADDR/v1/secrets" >/dev/null
done
# Each request a new version of one of the 32 secrets, in turn.
cat > "$WORK/put.lua" <<'EOF'
local n = 0
local token = os.getenv("STRONGBOX_TOKEN")
request = function()
  n = n + 1
  local body = '{"secret_data":"{\\"AccountName\\":\\"app_user\\",\\"AccountPassword\\":\\"p' .. n .. '\\"}"}'
  return wrk.format("POST", "/v1/secrets/bench%2Fw" .. (n % 32) .. "/versions",
    {["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. token}, body)
end
EOF
export STRONGBOX_TOKEN
cpu() { awk '{print $14 + $15}' "/proc/$SERVER_PID/stat"; }
# Runs wrk with "$@"; prints "RATE CPU_US_PER_REQUEST" (the server's CPU over the row,
# connecting included, divided by the requests wrk counted), or fails when any response
# was not a success or any socket error or timeout happened.
row() {
  local c0 c1 out
  c0=$(cpu)
  out=$(wrk -t1 -d"${SECS}s" "$@")
  c1=$(cpu)
  awk -v t=$((c1 - c0)) -v hz="$(getconf CLK_TCK)" '
    /Non-2xx|Socket errors/ {bad=1} / requests in / {n=$1} /Requests\/sec/ {r=$2}
    END {if (bad || !r || !n) exit 1; printf "%.0f %.1f\n", r, t / hz * 1e6 / n}' <<< "$out"
}
echo "wrk, 1 thread, ${SECS}s per row, $(nproc) cores shared by wrk and the server"
for c in 32 128; do
  hrow=$(row -c"$c" "$STRONGBOX_ADDR/v1/health")
  rrow=$(row -c"$c" -H "Authorization: Bearer $STRONGBOX_TOKEN" \
    "$STRONGBOX_ADDR/v1/secrets/bench%2Fs/value")
  read -r h hc <<< "$hrow"
  read -r r rc <<< "$rrow"
  awk -v c="$c" -v h="$h" -v r="$r" -v hc="$hc" -v rc="$rc" 'BEGIN {
    printf "%4d connections: GET /v1/health %7.0f/s (server %5.1f µs CPU each)   GET …/value (79 B) %7.0f/s (%5.1f µs)   %.2fx of floor\n", c, h, hc, r, rc, r / h }'
done
wrow=$(row -c32 -s "$WORK/put.lua" "$STRONGBOX_ADDR")
read -r w wc <<< "$wrow"
awk -v w="$w" -v wc="$wc" 'BEGIN {
  printf "  32 connections: POST …/versions (durable writes) %7.0f/s (server %5.1f µs CPU each)\n", w, wc }'
