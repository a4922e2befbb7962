#!/usr/bin/env bash
# Makes sure PostgreSQL and MariaDB are installed and running for the database rotation
# tests (server/tests/api/rotation_db.rs, examples/apps/myapp, the Terraform scenario):
#
# - PostgreSQL server binaries (initdb, pg_ctl) for the tests' throwaway clusters, and a
#   `postgres` OS user to run them; the main cluster is started too.
# - MariaDB answering on 127.0.0.1:3306 as root without a password.
#
# On a fresh Debian machine it installs `postgresql` and `mariadb-server` with apt-get
# (as root). Idempotent: what is there and running is left alone. Exits non-zero with a
# clear message when a database cannot be made to answer, so the tests never skip.
set -euo pipefail

log() { echo "install-databases: $*" >&2; }
die() { log "$*"; exit 1; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null 2>&1; then sudo "$@"; else
        die "need root to run: $*"
    fi
}

apt_install() {
    command -v apt-get >/dev/null 2>&1 || die "apt-get not found; install $* by hand"
    log "installing $* with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    as_root apt-get update -qq >&2
    as_root apt-get install -y -qq "$@" >&2
}

pg_bin_dir() {
    ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1
}

# --- PostgreSQL --------------------------------------------------------------------
if [ -z "$(pg_bin_dir)" ] || [ ! -x "$(pg_bin_dir)/initdb" ] || ! command -v psql >/dev/null 2>&1; then
    apt_install postgresql postgresql-client
fi
id postgres >/dev/null 2>&1 || die "the postgres OS user is missing (the postgresql package creates it)"
if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
    if command -v pg_ctlcluster >/dev/null 2>&1 && [ -n "$(ls /etc/postgresql 2>/dev/null)" ]; then
        ver="$(ls /etc/postgresql | sort -V | tail -n 1)"
        log "starting PostgreSQL $ver main"
        as_root pg_ctlcluster --skip-systemctl-redirect "$ver" main start >&2 || true
    fi
fi
for _ in $(seq 1 60); do
    pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null && break
    sleep 1
done
pg_isready -q -h 127.0.0.1 -p 5432 || log "warning: the main PostgreSQL cluster does not answer on 5432 (the tests use their own clusters)"
log "PostgreSQL binaries: $(pg_bin_dir)"

# --- MariaDB -----------------------------------------------------------------------
mysql_ok() { mysql -h 127.0.0.1 -P 3306 -u root --connect-timeout=2 -e 'SELECT 1' >/dev/null 2>&1; }
if ! command -v mariadbd >/dev/null 2>&1 && [ ! -x /usr/sbin/mariadbd ]; then
    apt_install mariadb-server mariadb-client
fi
if ! mysql_ok; then
    as_root mkdir -p /run/mysqld
    as_root chown mysql:mysql /run/mysqld 2>/dev/null || true
    log "starting MariaDB"
    as_root start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd -- --user=mysql >&2
    for _ in $(seq 1 60); do
        mysql_ok && break
        # Socket login as root works out of the box on Debian (unix_socket); TCP as
        # root with an empty password is what the tests use: allow it once.
        if mysql -u root -e 'SELECT 1' >/dev/null 2>&1; then
            mysql -u root -e "CREATE USER IF NOT EXISTS 'root'@'127.0.0.1' IDENTIFIED BY ''; GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;" >&2 || true
        fi
        sleep 1
    done
fi
if ! mysql_ok && mysql -u root -e 'SELECT 1' >/dev/null 2>&1; then
    mysql -u root -e "CREATE USER IF NOT EXISTS 'root'@'127.0.0.1' IDENTIFIED BY ''; GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;" >&2
fi
mysql_ok || die "MariaDB does not answer on 127.0.0.1:3306 as root with an empty password"
log "MariaDB answers on 127.0.0.1:3306"
