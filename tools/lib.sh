# shellcheck shell=bash
# tools/lib.sh: functions shared by tools/run and tools/test. Sourced, never run.
#
# Callers set `set -euo pipefail` before sourcing. Everything here works both
# as root (CI: a fresh clone, no stdin) and as a normal user with sudo:
# - Debian packages are installed only when missing (ensure_packages);
# - as root, the private servers run as the system user `corral`
#   (DESIGN.md §8: never a sandbox, nor PostgreSQL, as host root);
#   as a normal user, everything runs as that user (ensure_service_user);
# - no system service is touched: PostgreSQL and Redis are private instances
#   on 127.0.0.1 at free ports, with their data in a directory we name.

CORRAL_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)

# The Claude Code CLI, pinned in this one place (DESIGN.md §1).
CLAUDE_CLI_PACKAGE=@anthropic-ai/claude-code
CLAUDE_CLI_VERSION=2.1.332

# Everything the build, the servers and the tests need (DESIGN.md §1).
# shellcheck disable=SC2034 # used by tools/run and tools/test
CORRAL_PACKAGES=(
    build-essential meson ninja-build pkg-config
    libevent-dev libevhtp-dev libssl-dev libhiredis-dev libpq-dev libjsmn-dev
    libcurl4-openssl-dev libwslay-dev libmbedtls-dev libcmocka-dev
    postgresql redis-server bubblewrap
    python3 python3-pytest python3-requests python3-psycopg2
    curl nodejs npm
)

# The interpreter with Debian's pytest, requests and psycopg2: a `python3`
# earlier on PATH (a pyenv shim, a virtualenv) may have none of them.
PY=/usr/bin/python3

SERVICE_USER=""      # set by ensure_service_user
SERVICE_CWD=/        # working directory of commands run by as_service
APT_UPDATED=0

log() { printf '%s: %s\n' "${0##*/}" "$*" >&2; }
die() { log "error: $*"; exit 1; }

is_root() { [[ $EUID -eq 0 ]]; }

# Runs a command as root: directly, or through sudo.
as_root() {
    if is_root; then
        "$@"
    elif command -v sudo >/dev/null; then
        sudo "$@"
    else
        die "not root and no sudo: cannot run: $*"
    fi
}

# ---------------------------------------------------------------- packages

pkg_installed() {
    case $1 in
        # Node.js from another source (e.g. NodeSource's nodejs package, which
        # bundles npm and conflicts with Debian's npm) is as good as Debian's.
        nodejs) command -v node >/dev/null && return 0 ;;
        npm) command -v npm >/dev/null && return 0 ;;
    esac
    [[ $(dpkg-query -W -f='${db:Status-Abbrev}' "$1" 2>/dev/null) == ii* ]]
}

apt_get() {
    as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get -q -y -o DPkg::Lock::Timeout=300 "$@"
}

# Installs those of the named Debian packages that are missing; runs
# `apt-get update` at most once per process, and only if something is missing.
ensure_packages() {
    local p missing=()
    for p in "$@"; do
        pkg_installed "$p" || missing+=("$p")
    done
    [[ ${#missing[@]} -eq 0 ]] && return 0
    log "installing missing Debian packages: ${missing[*]}"
    if [[ $APT_UPDATED -eq 0 ]]; then
        apt_get update >&2 || die "apt-get update failed"
        APT_UPDATED=1
    fi
    apt_get install --no-install-recommends "${missing[@]}" >&2 ||
        die "could not install: ${missing[*]}"
}

# ------------------------------------------------------------ service user

# Sets SERVICE_USER. As root: the system user `corral`, created if missing,
# whose home is the repository's var/. Otherwise: the calling user.
ensure_service_user() {
    if ! is_root; then
        SERVICE_USER=$(id -un)
        return 0
    fi
    SERVICE_USER=corral
    if ! id -u "$SERVICE_USER" >/dev/null 2>&1; then
        log "creating system user $SERVICE_USER"
        useradd --system --user-group --home-dir "$CORRAL_ROOT/var" \
            --shell /usr/sbin/nologin "$SERVICE_USER" ||
            die "useradd $SERVICE_USER failed"
    fi
}

# Replaces the current (sub)shell with a command run as the service user,
# in SERVICE_CWD. As root this goes through setpriv, which also execs in
# place, so `exec_as_service cmd &` leaves $! the command's own pid and a
# signal sent to it reaches the command itself.
exec_as_service() {
    cd "$SERVICE_CWD" || exit 1
    if is_root; then
        exec setpriv --reuid "$SERVICE_USER" --regid "$(id -g "$SERVICE_USER")" \
            --init-groups -- "$@"
    fi
    exec "$@"
}

# Runs a command as the service user and waits for it.
as_service() {
    (exec_as_service "$@")
}

# Gives a directory we created to the service user (as root; a no-op
# otherwise) and checks that the service user can use it: every parent must
# be traversable by it.
give_to_service() {
    local dir=$1
    if is_root; then
        chown "$SERVICE_USER:" "$dir"
    fi
    as_service test -x "$dir" -a -w "$dir" 2>/dev/null
}

# ----------------------------------------------------------------- helpers

# A random hex string (secrets, passwords): URL-safe, no quoting needed.
gen_secret() {
    od -An -N24 -tx1 /dev/urandom | tr -d ' \n'
}

port_is_free() {
    "$PY" - "$1" <<'EOF' 2>/dev/null
import socket, sys
s = socket.socket()
# As the servers do: a port whose old connections linger in TIME_WAIT is free.
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(1)
EOF
}

# Prints a free TCP port on 127.0.0.1, one the kernel picks (tests: no two
# runs collide).
free_port() {
    "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Prints the first free TCP port on 127.0.0.1 from $1 upwards (tools/run: a
# port that stays the same from one start to the next).
free_port_from() {
    local p
    for ((p = $1; p < $1 + 200; p++)); do
        if port_is_free "$p"; then
            echo "$p"
            return 0
        fi
    done
    die "no free port in $1..$(($1 + 199))"
}

# Configures (or reconfigures) a meson build directory, then builds it.
#   meson_build DIR [meson options...]
meson_build() {
    local dir=$1
    shift
    if [[ -f $dir/meson-private/coredata.dat ]]; then
        meson setup --reconfigure "$dir" "$@" >&2 ||
            meson setup --wipe "$dir" "$@" >&2 || return 1
    else
        meson setup "$dir" "$@" >&2 || return 1
    fi
    ninja -C "$dir" >&2
}

# Waits until URL answers 2xx. Fails after $2 seconds (default 60), or at
# once when process $3 (optional) has exited.
wait_http() {
    local url=$1 secs=${2:-60} pid=${3:-} i
    for ((i = 0; i < secs * 5; i++)); do
        curl -fsS -o /dev/null --max-time 2 "$url" 2>/dev/null && return 0
        if [[ -n $pid ]] && ! kill -0 "$pid" 2>/dev/null; then
            return 1
        fi
        sleep 0.2
    done
    return 1
}

# --------------------------------------------------------------- Claude CLI

# Installs the pinned Claude Code CLI under var/cli unless it is there.
# npm runs the package's postinstall, which puts the platform binary in
# place: never --ignore-scripts, never --omit=optional (DESIGN.md §1). Newer
# npm runs a dependency's install script only when package.json allows it
# (allowScripts), so var/cli/package.json says so. Node < 22 makes npm warn
# EBADENGINE; the CLI still runs (it is a binary).
ensure_claude_cli() {
    local var=$CORRAL_ROOT/var prefix=$CORRAL_ROOT/var/cli have=""
    local pkg_json=$prefix/node_modules/$CLAUDE_CLI_PACKAGE/package.json
    if [[ -x $prefix/node_modules/.bin/claude && -f $pkg_json ]]; then
        have=$(node -p 'require(process.argv[1]).version' "$pkg_json" 2>/dev/null || true)
        [[ $have == "$CLAUDE_CLI_VERSION" ]] && return 0
    fi
    ensure_packages nodejs npm
    log "installing $CLAUDE_CLI_PACKAGE@$CLAUDE_CLI_VERSION into var/cli"
    mkdir -p "$prefix"
    if ! give_to_service "$var" || ! give_to_service "$prefix"; then
        die "user $SERVICE_USER cannot write $prefix"
    fi
    printf '{\n  "private": true,\n  "allowScripts": { "%s": true }\n}\n' \
        "$CLAUDE_CLI_PACKAGE" | as_service tee "$prefix/package.json" >/dev/null
    # A throwaway npm cache: it would hold a second copy of the ~400 MB binary.
    as_service env HOME="$var" npm_config_cache="$prefix/.npm-cache" \
        npm install --prefix "$prefix" --no-audit --no-fund \
        --update-notifier=false --save-exact \
        "$CLAUDE_CLI_PACKAGE@$CLAUDE_CLI_VERSION" >&2 ||
        die "npm install $CLAUDE_CLI_PACKAGE@$CLAUDE_CLI_VERSION failed"
    rm -rf "$prefix/.npm-cache"
    [[ -x $prefix/node_modules/.bin/claude ]] ||
        die "npm installed no var/cli/node_modules/.bin/claude"
}

# ------------------------------------------------------------- PostgreSQL

PG_BIN=""        # bin dir of the newest installed PostgreSQL
PG_DATA=""       # data dir of the private cluster
PG_PORT=""
PG_PASSWORD=""   # of the superuser role corral
PG_LOG=""
PG_SOCKDIR=""
PG_STARTED=0     # 1 once pg_ctl start has been called: pg_stop must run

pg_find_bin() {
    local d
    d=$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin -type d \
        2>/dev/null | sort -V | tail -n 1)
    [[ -n $d && -x $d/pg_ctl ]] || die "no PostgreSQL under /usr/lib/postgresql"
    PG_BIN=$d
}

# pg_init DATA [SETTING...]: creates a cluster in DATA (unless it has one),
# with the superuser role corral, trust on the unix socket only, and
# scram-sha-256 over TCP with a generated password, kept in
# DATA/../pg-password (mode 600). Extra settings (`name = value` lines, e.g.
# fsync = off for tests) go into postgresql.conf. Sets PG_DATA and
# PG_PASSWORD.
pg_init() {
    local data=$1 pwfile
    shift
    pwfile=$(dirname "$data")/pg-password
    PG_DATA=$data
    if [[ -f $data/PG_VERSION ]]; then
        [[ -s $pwfile ]] || die "$pwfile is missing: remove $data to start afresh"
        PG_PASSWORD=$(<"$pwfile")
        return 0
    fi
    PG_PASSWORD=$(gen_secret)
    (umask 077 && printf '%s\n' "$PG_PASSWORD" >"$pwfile")
    if is_root; then chown "$SERVICE_USER:" "$pwfile"; fi
    log "initdb $data"
    as_service "$PG_BIN/initdb" -D "$data" -U corral --pwfile="$pwfile" \
        --auth-local=trust --auth-host=scram-sha-256 \
        --encoding=UTF8 --locale=C >"$data.initdb.log" 2>&1 || {
        cat "$data.initdb.log" >&2
        die "initdb failed"
    }
    if is_root; then chown "$SERVICE_USER:" "$data.initdb.log"; fi
    {
        printf '\n# corral: loopback only; port and socket directory are set\n'
        printf '# at each start in corral-run.conf.\n'
        printf "listen_addresses = '127.0.0.1'\n"
        printf '%s\n' "$@"
        printf "include_if_exists = 'corral-run.conf'\n"
    } | as_service tee -a "$data/postgresql.conf" >/dev/null
}

# pg_start PORT SOCKDIR LOGFILE: starts the cluster of pg_init (stopping a
# leftover postmaster of the same data dir first) and waits until it accepts
# connections. Sets PG_PORT, PG_SOCKDIR, PG_LOG.
pg_start() {
    PG_PORT=$1 PG_SOCKDIR=$2 PG_LOG=$3
    # A unix socket path is at most 107 bytes: <dir>/.s.PGSQL.<port>.
    [[ ${#PG_SOCKDIR} -le 90 ]] || die "socket directory path too long: $PG_SOCKDIR"
    if as_service "$PG_BIN/pg_ctl" -D "$PG_DATA" status >/dev/null 2>&1; then
        log "stopping a PostgreSQL left running on $PG_DATA"
        as_service "$PG_BIN/pg_ctl" -D "$PG_DATA" -m fast -w stop >/dev/null || true
    fi
    printf "port = %s\nunix_socket_directories = '%s'\n" \
        "$PG_PORT" "${PG_SOCKDIR//\'/\'\'}" |
        as_service tee "$PG_DATA/corral-run.conf" >/dev/null
    PG_STARTED=1
    if ! as_service "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$PG_LOG" -w -t 120 \
        start >/dev/null; then
        tail -n 20 "$PG_LOG" >&2 || true
        die "PostgreSQL did not start (log: $PG_LOG)"
    fi
    log "PostgreSQL $("$PG_BIN/postgres" -V | awk '{print $3}') on 127.0.0.1:$PG_PORT (data $PG_DATA)"
}

# pg_psql DB ARGS...: psql as the superuser over the unix socket.
pg_psql() {
    local db=$1
    shift
    as_service "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$PG_SOCKDIR" \
        -p "$PG_PORT" -U corral -d "$db" "$@"
}

# The URL of database $1 with the password (checked over TCP by pg_ensure_db).
pg_url() {
    printf 'postgresql://corral:%s@127.0.0.1:%s/%s' "$PG_PASSWORD" "$PG_PORT" "$1"
}

# Creates database $1 unless it exists, then checks its URL works over TCP.
pg_ensure_db() {
    local db=$1
    if [[ -z $(pg_psql postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$db'") ]]; then
        as_service "$PG_BIN/createdb" -h "$PG_SOCKDIR" -p "$PG_PORT" -U corral "$db" ||
            die "createdb $db failed"
    fi
    "$PG_BIN/psql" -X -q -tA -c 'SELECT 1' "$(pg_url "$db")" >/dev/null ||
        die "cannot connect to $db over TCP with the generated password"
}

# Stops the cluster if pg_start was called; fast first, immediate if that
# fails. Safe to call twice and from traps.
pg_stop() {
    [[ $PG_STARTED -eq 1 ]] || return 0
    PG_STARTED=0
    if as_service "$PG_BIN/pg_ctl" -D "$PG_DATA" status >/dev/null 2>&1; then
        as_service "$PG_BIN/pg_ctl" -D "$PG_DATA" -m fast -w -t 30 stop >/dev/null 2>&1 ||
            as_service "$PG_BIN/pg_ctl" -D "$PG_DATA" -m immediate -w -t 30 stop >/dev/null 2>&1 ||
            log "warning: could not stop PostgreSQL on $PG_DATA"
    fi
}

# ------------------------------------------------------------------ Redis

REDIS_DIR=""
REDIS_PORT=""
REDIS_PASSWORD=""
REDIS_STARTED=0

# redis_start DIR PORT: a private redis-server as the service user on
# 127.0.0.1:PORT with a generated password, no persistence, DEBUG allowed
# from loopback; pid file, log and working files in DIR.
redis_start() {
    REDIS_DIR=$1 REDIS_PORT=$2
    REDIS_PASSWORD=$(gen_secret)
    mkdir -p "$REDIS_DIR"
    give_to_service "$REDIS_DIR" || die "user $SERVICE_USER cannot write $REDIS_DIR"
    REDIS_STARTED=1
    as_service redis-server --bind 127.0.0.1 --port "$REDIS_PORT" \
        --save '' --appendonly no --requirepass "$REDIS_PASSWORD" \
        --enable-debug-command local --daemonize yes \
        --pidfile "$REDIS_DIR/redis.pid" --logfile "$REDIS_DIR/redis.log" \
        --dir "$REDIS_DIR" || {
        REDIS_STARTED=0
        die "redis-server failed to start"
    }
    local i
    for ((i = 0; i < 100; i++)); do
        if [[ $(REDISCLI_AUTH=$REDIS_PASSWORD redis-cli -h 127.0.0.1 \
            -p "$REDIS_PORT" ping 2>/dev/null) == PONG ]]; then
            log "Redis $(redis-server --version | sed -n 's/.* v=\([^ ]*\).*/\1/p') on 127.0.0.1:$REDIS_PORT"
            return 0
        fi
        sleep 0.1
    done
    tail -n 20 "$REDIS_DIR/redis.log" >&2 || true
    die "Redis did not answer PING (log: $REDIS_DIR/redis.log)"
}

redis_url() {
    printf 'redis://:%s@127.0.0.1:%s/0' "$REDIS_PASSWORD" "$REDIS_PORT"
}

# Stops the server of redis_start by the pid in its pid file. Safe to call
# twice and from traps.
redis_stop() {
    [[ $REDIS_STARTED -eq 1 ]] || return 0
    REDIS_STARTED=0
    local pidfile=$REDIS_DIR/redis.pid pid i
    for ((i = 0; i < 20; i++)); do # a daemonizing server writes it soon
        [[ -s $pidfile ]] && break
        sleep 0.1
    done
    [[ -s $pidfile ]] || { log "warning: no $pidfile: Redis not stopped"; return 0; }
    pid=$(<"$pidfile")
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
}
