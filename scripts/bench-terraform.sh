#!/usr/bin/env bash
# terraform apply / plan wall time for 200 secrets (for_each) against a dev server, next to
# the server's own time for the same 200 creates through the API. Release builds.
#
#   ./scripts/bench-terraform.sh [N]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-200}
cargo build --release -p strongbox-server -p terraform-provider-strongbox --bins
cargo build --release -p strongbox-client --example create_many
ROOT=$(pwd)
WORK=$(mktemp -d)
trap 'kill $SERVER_PID 2>/dev/null || true; rm -rf "$WORK"' EXIT
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
MIRROR="$WORK/mirror/registry.terraform.io/strongbox/strongbox/$VERSION/linux_amd64"
mkdir -p "$MIRROR" "$WORK/tf"
cp target/release/terraform-provider-strongbox "$MIRROR/terraform-provider-strongbox_v$VERSION"
cat > "$WORK/cli.tfrc" <<TFRC
provider_installation {
  filesystem_mirror {
    path    = "$WORK/mirror"
    include = ["registry.terraform.io/strongbox/strongbox"]
  }
}
disable_checkpoint = true
TFRC
target/release/strongbox server --dev --listen 127.0.0.1:0 > "$WORK/dev.out" 2> "$WORK/dev.err" &
SERVER_PID=$!
for _ in $(seq 50); do [ "$(wc -l < "$WORK/dev.out")" -ge 3 ] && break; sleep 0.1; done
eval "$(cat "$WORK/dev.out")"
export TF_CLI_CONFIG_FILE="$WORK/cli.tfrc" CHECKPOINT_DISABLE=1 TF_IN_AUTOMATION=1
cat > "$WORK/tf/main.tf" <<TF
terraform {
  required_providers {
    strongbox = { source = "strongbox/strongbox" }
  }
}
resource "strongbox_secret" "s" {
  for_each    = toset([for i in range($N) : tostring(i)])
  name        = "tf-bench/s\${each.key}"
  secret_data = "value-\${each.key}"
}
TF
cd "$WORK/tf"
terraform init -no-color > /dev/null
t() { local s=$EPOCHREALTIME; "$@" > /dev/null; awk -v a="$s" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", b - a }'; }
echo "terraform $(terraform version | head -n1), $N secrets"
echo "terraform apply (create $N):   $(t terraform apply -auto-approve -no-color -parallelism=10) s"
echo "terraform plan (refresh $N):   $(t terraform plan -no-color) s"
echo "terraform plan -refresh=false: $(t terraform plan -refresh=false -no-color) s"
cd "$ROOT"
target/release/examples/create_many "$N" api-bench
