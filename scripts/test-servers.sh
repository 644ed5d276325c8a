#!/usr/bin/env bash
# Start / stop the private servers the test suite talks to, on dedicated loopback ports:
#   Redis 16379, Redis Cluster 17001-17003 (3 masters), memcached 21211 and 21212-21214,
#   and make sure PostgreSQL answers on 127.0.0.1:5432 with a database "test".
# Missing binaries are installed with apt-get when running as root; otherwise we stop
# with a clear message. Nothing here touches servers on other ports.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
RUN="$ROOT/.test-servers"
REDIS_PORT=16379
CLUSTER_PORTS=(17001 17002 17003)
MC_PORTS=(21211 21212 21213 21214)
PG_HOST=127.0.0.1
PG_PORT=5432

say() { echo "[test-servers] $*" >&2; }

need() {  # need BINARY DEBIAN_PACKAGE
    if command -v "$1" >/dev/null 2>&1; then return; fi
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        say "$1 is missing: installing Debian package $2"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >/dev/null || true
        apt-get install -y -qq "$2" >/dev/null
    fi
    command -v "$1" >/dev/null 2>&1 || {
        say "ERROR: $1 is not installed and I cannot install it (need root + apt-get)."
        say "Install package '$2' (e.g. sudo apt-get install -y $2) and run make test again."
        exit 1
    }
}

wait_port() {  # wait_port PORT SECONDS
    local port=$1 deadline=$((SECONDS + $2))
    until (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null; do
        if [ $SECONDS -ge $deadline ]; then say "ERROR: nothing answers on port $port"; exit 1; fi
        sleep 0.1
    done
}

start_redis() {
    local port=$1; shift
    mkdir -p "$RUN/redis-$port"
    redis-server --port "$port" --bind 127.0.0.1 --daemonize yes --save "" --appendonly no \
        --dir "$RUN/redis-$port" --pidfile "$RUN/redis-$port.pid" \
        --logfile "$RUN/redis-$port.log" "$@"
}

start_postgres() {
    if pg_isready -q -h $PG_HOST -p $PG_PORT 2>/dev/null; then :; else
        need pg_ctlcluster postgresql
        local ver; ver=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -1)
        if [ -z "$ver" ]; then say "ERROR: PostgreSQL installed but no cluster found"; exit 1; fi
        say "starting PostgreSQL $ver"
        pg_ctlcluster --skip-systemctl-redirect "$ver" main start || true
        for _ in $(seq 50); do pg_isready -q -h $PG_HOST -p $PG_PORT && break; sleep 0.2; done
        pg_isready -q -h $PG_HOST -p $PG_PORT || { say "ERROR: PostgreSQL does not answer"; exit 1; }
    fi
    if ! psql -h $PG_HOST -p $PG_PORT -U postgres -d test -Atc 'select 1' >/dev/null 2>&1; then
        if [ "$(id -u)" = 0 ] && id postgres >/dev/null 2>&1; then
            su postgres -c "createdb -h $PG_HOST -p $PG_PORT test" 2>/dev/null || true
        fi
        psql -h $PG_HOST -p $PG_PORT -U postgres -d test -Atc 'select 1' >/dev/null || {
            say "ERROR: cannot connect to postgresql://postgres@$PG_HOST:$PG_PORT/test (trust auth expected)"
            exit 1
        }
    fi
}

port_busy() { (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null; }

free_ports() {
    # Our ports are dedicated to this suite: a server left there by an earlier run
    # (killed shell, other checkout) is ours to stop, so no test reads its data.
    local p
    for p in $REDIS_PORT "${CLUSTER_PORTS[@]}"; do
        if port_busy "$p"; then
            say "stopping a leftover server on port $p"
            redis-cli -p "$p" shutdown nosave >/dev/null 2>&1 || true
        fi
    done
    for p in "${MC_PORTS[@]}"; do
        if port_busy "$p"; then
            say "stopping a leftover memcached on port $p"
            pkill -f "memcached .*-p $p( |$)" 2>/dev/null || true
        fi
    done
    for p in $REDIS_PORT "${CLUSTER_PORTS[@]}" "${MC_PORTS[@]}"; do
        for _ in $(seq 50); do port_busy "$p" || break; sleep 0.1; done
        if port_busy "$p"; then say "ERROR: port $p is in use by another program"; exit 1; fi
    done
}

start() {
    need redis-server redis-server
    need redis-cli redis-tools
    need memcached memcached
    need pg_isready postgresql-client
    need psql postgresql-client
    stop >/dev/null 2>&1 || true
    free_ports
    mkdir -p "$RUN"
    start_redis $REDIS_PORT
    for p in "${CLUSTER_PORTS[@]}"; do
        start_redis "$p" --cluster-enabled yes --cluster-config-file "$RUN/redis-$p/nodes.conf" \
            --cluster-node-timeout 2000
    done
    local user=(); [ "$(id -u)" = 0 ] && user=(-u root)
    for p in "${MC_PORTS[@]}"; do
        memcached -d "${user[@]}" -l 127.0.0.1 -p "$p" -U 0 -m 64 -P "$RUN/memcached-$p.pid"
    done
    wait_port $REDIS_PORT 10
    for p in "${CLUSTER_PORTS[@]}" "${MC_PORTS[@]}"; do wait_port "$p" 10; done
    redis-cli --cluster create $(printf '127.0.0.1:%s ' "${CLUSTER_PORTS[@]}") \
        --cluster-replicas 0 --cluster-yes >"$RUN/cluster-create.log" 2>&1 || {
        say "ERROR: redis-cli --cluster create failed:"; cat "$RUN/cluster-create.log" >&2; exit 1; }
    for _ in $(seq 100); do
        if redis-cli -p "${CLUSTER_PORTS[0]}" cluster info 2>/dev/null | grep -q 'cluster_state:ok'; then
            break
        fi
        sleep 0.1
    done
    redis-cli -p "${CLUSTER_PORTS[0]}" cluster info | grep -q 'cluster_state:ok' || {
        say "ERROR: the Redis cluster did not reach cluster_state:ok"; exit 1; }
    start_postgres
    say "up: redis :$REDIS_PORT, cluster :${CLUSTER_PORTS[*]}, memcached :${MC_PORTS[*]}, postgres :$PG_PORT"
}

stop() {
    shopt -s nullglob
    for f in "$RUN"/*.pid; do
        kill "$(cat "$f")" 2>/dev/null || true
        rm -f "$f"
    done
    rm -rf "$RUN"
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
