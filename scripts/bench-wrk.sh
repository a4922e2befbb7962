#!/usr/bin/env bash
# Secret reads against /v1/health with an external, lean HTTPS client (wrk, one thread),
# on the release server binary with its embedded database: the same ratio as
# `cargo bench -p strongbox-server --bench api`, without the in-process client's cost.
#
#   ./scripts/bench-wrk.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-4}
if ! command -v wrk >/dev/null; then
  SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
  $SUDO apt-get install -y wrk >/dev/null
fi
cargo build --release -p strongbox-server --bins
WORK=$(mktemp -d)
trap 'kill $SERVER_PID 2>/dev/null || true; rm -rf "$WORK"' EXIT
target/release/strongbox server --dev --listen 127.0.0.1:0 > "$WORK/dev.out" 2> "$WORK/dev.err" &
SERVER_PID=$!
for _ in $(seq 50); do [ "$(wc -l < "$WORK/dev.out")" -ge 3 ] && break; sleep 0.1; done
eval "$(cat "$WORK/dev.out")"
curl -sS --fail --cacert "$STRONGBOX_CACERT" -H "Authorization: Bearer $STRONGBOX_TOKEN" \
  -H 'Content-Type: application/json' \
  -d '{"name":"bench/s","secret_data":"{\"AccountName\":\"app_user\",\"AccountPassword\":\"Zq3#v9LmP2@wX8!rT5yKc1&nB7uE4hJ6\"}"}' \
  "$STRONGBOX_ADDR/v1/secrets" >/dev/null
# Requests/s, or a failure when any response was not a success.
rate() { awk '/Non-2xx/ {bad=1} /Requests\/sec/ {r=$2} END {if (bad || !r) exit 1; print r}'; }
echo "wrk, 1 thread, ${SECS}s per row, $(nproc) cores shared by wrk and the server"
for c in 32 128; do
  h=$(wrk -t1 -c"$c" -d"${SECS}s" "$STRONGBOX_ADDR/v1/health" | rate)
  r=$(wrk -t1 -c"$c" -d"${SECS}s" -H "Authorization: Bearer $STRONGBOX_TOKEN" \
    "$STRONGBOX_ADDR/v1/secrets/bench%2Fs/value" | rate)
  awk -v c="$c" -v h="$h" -v r="$r" 'BEGIN {
    printf "%4d connections: GET /v1/health %9.0f/s   GET …/value (79 B) %9.0f/s   %.2fx of floor\n", c, h, r, r / h }'
done
