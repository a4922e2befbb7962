#!/usr/bin/env bash
# Installs what the SSH rotation tests (server/tests/api/rotation_ssh.rs) need: Debian's
# openssh-server (/usr/sbin/sshd, ssh-keygen) and the unprivileged account `sbtest` they
# log in as. Idempotent; nothing is started here (each test starts its own sshd on a free
# loopback port with its own host key and configuration) and the system's sshd service is
# left alone. Run as root on Debian; fails with a clear message otherwise.
set -euo pipefail

log() { echo "install-sshd: $*" >&2; }

if [ ! -x /usr/sbin/sshd ] || ! command -v ssh >/dev/null 2>&1 || ! command -v ssh-keygen >/dev/null 2>&1 \
    || ! command -v chpasswd >/dev/null 2>&1; then
    if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
        log "openssh-server is missing and cannot be installed (needs root and apt-get)"
        exit 1
    fi
    log "installing openssh-server with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    # Do not let the package start the system's sshd on port 22.
    policy_rc=/usr/sbin/policy-rc.d
    if [ ! -e "$policy_rc" ]; then
        printf '#!/bin/sh\nexit 101\n' > "$policy_rc"
        chmod 0755 "$policy_rc"
        trap 'rm -f "$policy_rc"' EXIT
    fi
    apt-get update -qq >&2
    apt-get install -y -qq --no-install-recommends openssh-server openssh-client passwd >&2
fi
# sshd refuses to start without its privilege-separation directory.
mkdir -p /run/sshd
chmod 0755 /run/sshd

if [ "$(id -u)" -eq 0 ] && ! id sbtest >/dev/null 2>&1; then
    log "creating the unprivileged account sbtest"
    useradd --create-home --shell /bin/sh sbtest
fi
if ! id sbtest >/dev/null 2>&1; then
    log "the account sbtest is missing and cannot be created (needs root)"
    exit 1
fi
log "sshd $(/usr/sbin/sshd -V 2>&1 | head -n 1 || true) ready; account sbtest present"
