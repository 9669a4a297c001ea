# shellcheck shell=bash
# bench/baselines/lib.sh: shared by bench/baselines/nchan and
# bench/baselines/fastapi. Sourced, never run.
#
# Each baseline keeps its state (rendered config, pid file, logs, temp
# files) in var/bench/<name>/, owned by the service user of tools/lib.sh
# (as root: `corral`), so no system configuration is read or written and
# no system service is started. `start` runs the server as that user.

# shellcheck source=tools/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../../tools/lib.sh"

# shellcheck disable=SC2034 # used by the scripts sourcing this
BASELINES_DIR=$CORRAL_ROOT/bench/baselines

# The listen backlog of every server compared: corrald's (src/http/http.c).
# shellcheck disable=SC2034 # used by the scripts sourcing this
BASELINE_BACKLOG=1024

# base_dir NAME: prints var/bench/NAME after creating it (and its parents)
# for the service user.
base_dir() {
    local var=$CORRAL_ROOT/var dir=$CORRAL_ROOT/var/bench/$1
    mkdir -p "$dir"
    if ! give_to_service "$var" || ! give_to_service "$var/bench" ||
        ! give_to_service "$dir"; then
        die "user $SERVICE_USER cannot write $dir"
    fi
    printf '%s\n' "$dir"
}

# check_port PORT: dies unless PORT is a TCP port number free on 127.0.0.1.
check_port() {
    if ! [[ $1 =~ ^[0-9]+$ ]] || (($1 < 1 || $1 > 65535)); then
        die "bad port: $1"
    fi
    port_is_free "$1" || die "127.0.0.1:$1 is in use"
}

# pid_alive PID WORD: true if PID runs and its command line contains WORD
# (so a pid reused by another program is never signalled).
pid_alive() {
    [[ $1 =~ ^[0-9]+$ ]] && kill -0 "$1" 2>/dev/null &&
        tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -q -- "$2"
}

# group_alive PGID: true while any process of the process group runs.
group_alive() {
    kill -0 -- "-$1" 2>/dev/null
}

# stop_group PIDFILE WORD: stops the server whose pid (a process-group
# leader: nginx's master, our setsid'd uvicorn) is in PIDFILE. SIGTERM
# first; SIGINT after 3 s (uvicorn waits for open streams to end unless a
# SIGINT follows; nginx takes it as SIGTERM); SIGKILL to the whole group
# after 10 s. Returns once no process of the group is left. A missing or
# stale pid file is not an error.
stop_group() {
    local pidfile=$1 word=$2 pid i
    [[ -s $pidfile ]] || { log "not running (no $pidfile)"; return 0; }
    pid=$(<"$pidfile")
    if ! pid_alive "$pid" "$word"; then
        if [[ $pid =~ ^[0-9]+$ ]] && group_alive "$pid"; then
            kill -KILL -- "-$pid" 2>/dev/null || true
        fi
        rm -f "$pidfile"
        log "not running (stale $pidfile)"
        return 0
    fi
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        group_alive "$pid" || break
        if ((i == 30)); then kill -INT "$pid" 2>/dev/null || true; fi
        sleep 0.1
    done
    if group_alive "$pid"; then
        log "process group $pid still running after 10 s: SIGKILL"
        kill -KILL -- "-$pid" 2>/dev/null || true
        for ((i = 0; i < 50; i++)); do
            group_alive "$pid" || break
            sleep 0.1
        done
    fi
    group_alive "$pid" && die "could not stop process group $pid"
    rm -f "$pidfile"
    log "stopped $word (pid $pid)"
}
