#!/usr/bin/env bash
# A throw-away PostgreSQL cluster on 127.0.0.1 for tests, from Debian's packages
# (installed with apt-get when missing). The server refuses to run as root, so
# when we are root every server command runs as the `postgres` user.
#
#   bash scripts/postgres.sh start     install if needed, fresh cluster, start, wait until ready
#   bash scripts/postgres.sh restart [fast|immediate]
#                                      restart the SAME cluster, keeping its data; safe while
#                                      tests are connected (their connections are cut).
#                                      Mode also from PG_RESTART_MODE; default fast.
#                                      PG_DOWN_SECONDS keeps it down that long (default 0).
#   bash scripts/postgres.sh stop      stop it and delete its data; idempotent
#   bash scripts/postgres.sh status    exit 0 when it accepts connections
#   bash scripts/postgres.sh logs      tail of the server log (PG_LOG_LINES, default 80)
#   bash scripts/postgres.sh stop-all  stop every cluster this script started (all instances)
#
# Environment (all optional): PGPORT (default 5432), PG_START_TIMEOUT (default 60 s),
# PG_INSTANCE (default none): a name for a second, independent cluster, e.g. one that a
# test restarts without disturbing the tests that share the main one.
# Clients connect with: postgres://postgres@127.0.0.1:$PGPORT/postgres (trust auth).
#
# State lives in var/postgres/ (var/postgres-$PG_INSTANCE/ for a named instance). The
# data directory is var/postgres/data unless the `postgres` user cannot reach that
# path (e.g. a repository under a private home directory); then it lives under /tmp
# and var/postgres/state records where.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

PGPORT="${PGPORT:-5432}"
PG_START_TIMEOUT="${PG_START_TIMEOUT:-60}"
PG_LOG_LINES="${PG_LOG_LINES:-80}"

PG_INSTANCE="${PG_INSTANCE:-}"
[[ "$PG_INSTANCE" =~ ^[A-Za-z0-9_-]*$ ]] || { echo "postgres.sh: PG_INSTANCE may hold only letters, digits, _ and -" >&2; exit 2; }
VAR_DIR="$ROOT/var/postgres${PG_INSTANCE:+-$PG_INSTANCE}"
STATE_FILE="$VAR_DIR/state"
LOG_COPY="$VAR_DIR/postgres.log"

say() { echo "postgres.sh: $*" >&2; }
die() {
    say "error: $*"
    exit 1
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Run a command as the server's owner: `postgres` when we are root, else ourselves.
as_pg() {
    if ((EUID == 0)); then
        (cd / && runuser -u postgres -- "$@")
    else
        "$@"
    fi
}

PG_BIN=""
find_pg_bin() {
    local dir
    PG_BIN=""
    # The newest installed major version wins.
    for dir in $(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V); do
        if [[ -x "$dir/initdb" && -x "$dir/pg_ctl" && -x "$dir/postgres" ]]; then
            PG_BIN="$dir"
        fi
    done
    [[ -n "$PG_BIN" ]]
}

# Debian's package starts a default cluster (e.g. 15/main on port 5432) when the
# machine allows services to start. It was not there before we installed it, so it
# is ours to stop: our own cluster needs the port.
stop_default_clusters() {
    command -v pg_lsclusters >/dev/null || return 0
    local version name port status rest
    while read -r version name port status rest; do
        if [[ "$status" == online* ]]; then
            say "stopping Debian's default cluster $version/$name on port $port (installed just now)"
            pg_ctlcluster "$version" "$name" stop || true
        fi
    done < <(pg_lsclusters -h 2>/dev/null || true)
}

ensure_installed() {
    find_pg_bin && return 0
    ((EUID == 0)) || die "PostgreSQL is not installed and we are not root: apt-get install -y postgresql"
    command -v apt-get >/dev/null || die "PostgreSQL is not installed and apt-get is not available"
    say "PostgreSQL not found under /usr/lib/postgresql/*/bin; installing it with apt-get"
    local started=$SECONDS
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    stop_default_clusters
    find_pg_bin || die "apt-get installed postgresql but no initdb/pg_ctl under /usr/lib/postgresql/*/bin"
    say "installed PostgreSQL ($PG_BIN) in $((SECONDS - started)) s"
}

# State of the current cluster: BASE (holds data/ and the live log), PG_BIN, PGPORT.
BASE=""
load_state() {
    [[ -f "$STATE_FILE" ]] || return 1
    BASE="$(sed -n 's/^BASE=//p' "$STATE_FILE")"
    PG_BIN="$(sed -n 's/^PG_BIN=//p' "$STATE_FILE")"
    PGPORT="$(sed -n 's/^PGPORT=//p' "$STATE_FILE")"
    [[ -n "$BASE" && -n "$PG_BIN" && -n "$PGPORT" ]]
}

data_dir() { echo "$BASE/data"; }
live_log() { echo "$BASE/postgres.log"; }

# The postmaster's pid, from postmaster.pid, if that process is alive.
postmaster_pid() {
    local pid_file pid
    pid_file="$(data_dir)/postmaster.pid"
    [[ -f "$pid_file" ]] || return 1
    pid="$(head -n 1 "$pid_file")"
    [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
    echo "$pid"
}

is_running() {
    load_state || return 1
    [[ -d "$(data_dir)" ]] || return 1
    as_pg "$PG_BIN/pg_ctl" -D "$(data_dir)" status >/dev/null 2>&1
}

# Pick where the cluster lives: inside the repository when `postgres` can get
# there, else a private directory under /tmp.
choose_base() {
    mkdir -p "$VAR_DIR"
    BASE="$VAR_DIR"
    if ((EUID == 0)); then
        chown postgres: "$VAR_DIR"
        if ! runuser -u postgres -- test -w "$VAR_DIR" 2>/dev/null; then
            BASE="$(mktemp -d "/tmp/testbed-postgres${PG_INSTANCE:+-$PG_INSTANCE}.XXXXXX")"
            chown postgres: "$BASE"
            say "the postgres user cannot reach $VAR_DIR; using $BASE"
        fi
    fi
    {
        echo "BASE=$BASE"
        echo "PG_BIN=$PG_BIN"
        echo "PGPORT=$PGPORT"
    } >"$STATE_FILE"
}

write_config() {
    local data
    data="$(data_dir)"
    cat >>"$data/postgresql.conf" <<EOF

# ---- scripts/postgres.sh: a throw-away cluster for tests ----
listen_addresses = '127.0.0.1'
port = $PGPORT
# No Unix socket: clients use TCP, and this cannot clash with a system cluster's socket.
unix_socket_directories = ''
max_connections = 200
shared_buffers = 128MB
# The OS never crashes under a test, so skip flushing to disk. Commits still wait
# for their WAL write (synchronous_commit stays on), so a server crash or an
# immediate restart loses nothing that was committed.
fsync = off
full_page_writes = off
synchronous_commit = on
log_line_prefix = '%m [%p] %q%u@%d '
log_timezone = 'UTC'
timezone = 'UTC'
EOF
    # Extra settings for this cluster, e.g. for a benchmark's profile:
    # PG_EXTRA_CONF="shared_preload_libraries = 'pg_stat_statements'".
    if [[ -n "${PG_EXTRA_CONF:-}" ]]; then
        printf '%s\n' "$PG_EXTRA_CONF" >>"$data/postgresql.conf"
    fi
    cat >"$data/pg_hba.conf" <<'EOF'
# scripts/postgres.sh: trust, reachable only from this machine.
local   all   all                 trust
host    all   all   127.0.0.1/32  trust
host    all   all   ::1/128       trust
EOF
}

pg_ctl_start() {
    as_pg "$PG_BIN/pg_ctl" -D "$(data_dir)" -l "$(live_log)" -w -t "$PG_START_TIMEOUT" start >/dev/null
}

wait_ready() {
    local deadline=$((SECONDS + PG_START_TIMEOUT))
    until "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PGPORT" -U postgres -d postgres; do
        if ((SECONDS >= deadline)); then
            tail_log >&2
            die "PostgreSQL did not accept connections on 127.0.0.1:$PGPORT within ${PG_START_TIMEOUT} s"
        fi
        sleep 0.2
    done
}

cmd_start() {
    ensure_installed
    if is_running || load_state; then
        say "a cluster from an earlier start is still here; removing it first"
        cmd_stop
    fi
    PGPORT="${PGPORT_REQUESTED}"
    if port_open "$PGPORT"; then
        die "something else already listens on 127.0.0.1:$PGPORT (another PostgreSQL? set PGPORT to use another port)"
    fi

    local started=$SECONDS
    find_pg_bin
    choose_base
    rm -rf "$(data_dir)" "$LOG_COPY"
    : >"$(live_log)"
    ((EUID == 0)) && chown postgres: "$(live_log)"
    as_pg "$PG_BIN/initdb" -D "$(data_dir)" -U postgres --auth=trust --no-locale \
        --encoding=UTF8 --no-sync --no-instructions >"$BASE/initdb.log" 2>&1 || {
        cat "$BASE/initdb.log" >&2
        die "initdb failed"
    }
    write_config
    if ! pg_ctl_start; then
        tail_log >&2
        die "pg_ctl could not start PostgreSQL"
    fi
    wait_ready
    say "PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}') ready on 127.0.0.1:$PGPORT in $((SECONDS - started)) s (data: $(data_dir))"
}

cmd_restart() {
    local mode="${1:-${PG_RESTART_MODE:-fast}}"
    [[ "$mode" == fast || "$mode" == immediate ]] || die "restart mode must be fast or immediate, not '$mode'"
    is_running || die "no cluster is running; use: bash scripts/postgres.sh start"
    local started=$SECONDS
    as_pg "$PG_BIN/pg_ctl" -D "$(data_dir)" -m "$mode" -w -t "$PG_START_TIMEOUT" stop >/dev/null
    # Tests keep the server down a while, to see clients wait for it.
    sleep "${PG_DOWN_SECONDS:-0}"
    pg_ctl_start || {
        tail_log >&2
        die "PostgreSQL did not come back after a $mode stop"
    }
    wait_ready
    say "restarted ($mode) on 127.0.0.1:$PGPORT in $((SECONDS - started)) s"
}

cmd_stop() {
    if ! load_state; then
        say "not running"
        return 0
    fi
    local pid
    if pid="$(postmaster_pid)"; then
        if ! as_pg "$PG_BIN/pg_ctl" -D "$(data_dir)" -m fast -w -t 30 stop >/dev/null 2>&1; then
            say "fast shutdown failed; trying immediate"
            as_pg "$PG_BIN/pg_ctl" -D "$(data_dir)" -m immediate -w -t 10 stop >/dev/null 2>&1 ||
                kill -KILL "$pid" 2>/dev/null || true
        fi
        while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
        say "stopped (pid $pid)"
    else
        say "not running"
    fi
    # Keep the log for a post-mortem; everything else goes.
    if [[ "$(live_log)" != "$LOG_COPY" && -f "$(live_log)" ]]; then
        cp "$(live_log)" "$LOG_COPY"
    fi
    rm -rf "$(data_dir)" "$BASE/initdb.log"
    if [[ "$BASE" != "$VAR_DIR" ]]; then
        rm -rf "$BASE"
    fi
    rm -f "$STATE_FILE"
}

cmd_status() {
    if is_running && "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PGPORT"; then
        echo "running: 127.0.0.1:$PGPORT, data $(data_dir)"
        return 0
    fi
    echo "not running"
    return 1
}

tail_log() {
    local n="${1:-$PG_LOG_LINES}" log="$LOG_COPY"
    if load_state && [[ -f "$(live_log)" ]]; then
        log="$(live_log)"
    fi
    if [[ -s "$log" ]]; then
        echo "---- last $n lines of $log ----"
        tail -n "$n" "$log"
    else
        echo "no PostgreSQL log at $log"
    fi
}

cmd_stop_all() {
    local dir instance
    for dir in "$ROOT"/var/postgres "$ROOT"/var/postgres-*; do
        [[ -f "$dir/state" ]] || continue
        instance="${dir#"$ROOT"/var/postgres}"
        PG_INSTANCE="${instance#-}" bash "${BASH_SOURCE[0]}" stop
    done
}

PGPORT_REQUESTED="$PGPORT"
case "${1:-}" in
start) cmd_start ;;
restart) cmd_restart "${2:-}" ;;
stop) cmd_stop ;;
stop-all) cmd_stop_all ;;
status) cmd_status ;;
logs) tail_log "${2:-}" ;;
*)
    echo "usage: bash scripts/postgres.sh start|restart [fast|immediate]|stop|stop-all|status|logs [lines]" >&2
    exit 2
    ;;
esac
