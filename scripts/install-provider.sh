#!/usr/bin/env bash
# Builds terraform-provider-strongbox and installs it into Terraform's implied local
# mirror, so that `terraform init` with `source = "strongbox/strongbox"` works offline:
#
#   ./scripts/install-provider.sh            # debug build
#   ./scripts/install-provider.sh --release  # optimised build
#   ./scripts/install-provider.sh --no-build # install the binary already built
#
# It lands at
#   ~/.terraform.d/plugins/registry.terraform.io/strongbox/strongbox/VERSION/OS_ARCH/terraform-provider-strongbox_vVERSION
# with VERSION from provider/Cargo.toml. Use CARGO_BUILD_JOBS=1 to limit the build's
# parallelism and CARGO_TARGET_DIR as usual.
#
# Terraform only searches the implied mirrors when the CLI configuration (~/.terraformrc
# or $TF_CLI_CONFIG_FILE) has no `provider_installation` block.
#
# After installing a rebuilt binary under the same VERSION, delete `.terraform.lock.hcl`
# (and `.terraform/`) in each configuration that used the old one and run `terraform init`
# again: the lock file pins the old binary's h1: hash.
set -euo pipefail

usage() { awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; }

profile=debug
build=1
while [ $# -gt 0 ]; do
    case "$1" in
        --release) profile=release ;;
        --no-build) build=0 ;;
        -h | --help) usage; exit 0 ;;
        *) echo "install-provider: unknown argument $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

# VERSION: [package] version of provider/Cargo.toml, or the workspace's when inherited.
version="$(awk '/^\[/{sec=$0} sec=="[package]" && /^version *=/{gsub(/.*= *"|".*/,""); print; exit}' provider/Cargo.toml)"
if [ -z "$version" ]; then
    version="$(awk '/^\[/{sec=$0} sec=="[workspace.package]" && /^version *=/{gsub(/.*= *"|".*/,""); print; exit}' Cargo.toml)"
fi
if [ -z "$version" ]; then
    echo "install-provider: cannot read the provider's version from provider/Cargo.toml" >&2
    exit 1
fi

case "$(uname -s)" in
    Linux) os=linux ;;
    Darwin) os=darwin ;;
    *) echo "install-provider: unsupported OS $(uname -s)" >&2; exit 1 ;;
esac
case "$(uname -m)" in
    x86_64 | amd64) arch=amd64 ;;
    aarch64 | arm64) arch=arm64 ;;
    *) echo "install-provider: unsupported architecture $(uname -m)" >&2; exit 1 ;;
esac

# The provider is a member of the root workspace; a checkout where it is not (a copy of
# provider/ alone) builds from its own manifest, into the shared target dir all the same.
cargo_args=(-p terraform-provider-strongbox)
if ! cargo metadata --format-version 1 --no-deps 2>/dev/null \
    | grep -q '"name":"terraform-provider-strongbox"'; then
    cargo_args=(--manifest-path provider/Cargo.toml)
    export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"
fi
[ "$profile" = release ] && cargo_args+=(--release)

if [ "$build" = 1 ]; then
    echo "install-provider: cargo build ${cargo_args[*]}" >&2
    cargo build "${cargo_args[@]}" --bin terraform-provider-strongbox
fi

target_dir="${CARGO_TARGET_DIR:-$root/target}"
case "$target_dir" in /*) ;; *) target_dir="$root/$target_dir" ;; esac
bin="$target_dir/$profile/terraform-provider-strongbox"
if [ ! -x "$bin" ]; then
    echo "install-provider: $bin not found (build it, or drop --no-build)" >&2
    exit 1
fi

dest_dir="$HOME/.terraform.d/plugins/registry.terraform.io/strongbox/strongbox/$version/${os}_$arch"
dest="$dest_dir/terraform-provider-strongbox_v$version"
mkdir -p "$dest_dir"
# Copy through a temporary name so a running terraform never sees a half-written file.
install -m 0755 "$bin" "$dest.tmp.$$"
mv -f "$dest.tmp.$$" "$dest"

cat >&2 <<EOF
install-provider: installed $profile build of terraform-provider-strongbox $version
  $dest
Use it with:
  terraform { required_providers { strongbox = { source = "strongbox/strongbox" } } }
Reminder: this binary replaces any earlier one of version $version. In every configuration
that ran 'terraform init' with the earlier binary, remove .terraform.lock.hcl (and
.terraform/) and run 'terraform init' again, or Terraform refuses the new checksum.
EOF
stale="$(find "$root/examples" -name .terraform.lock.hcl 2>/dev/null || true)"
if [ -n "$stale" ]; then
    echo "Lock files in this repository that may pin an earlier binary:" >&2
    echo "$stale" | sed 's/^/  /' >&2
fi
echo "$dest"
