#!/usr/bin/env bash
# A throw-away single-node Apache Kafka broker (KRaft) on 127.0.0.1 for tests,
# run straight from the jars Maven Central serves (no tarball, no container).
#
#   bash scripts/kafka.sh fetch    download the broker's jars once into the cache (below)
#   bash scripts/kafka.sh start    fetch if needed, fresh data dir, start, wait until ready
#   bash scripts/kafka.sh stop     SIGTERM, SIGKILL after KAFKA_STOP_TIMEOUT s; idempotent
#   bash scripts/kafka.sh status   exit 0 when running and accepting connections
#   bash scripts/kafka.sh logs     tail of the broker log (KAFKA_LOG_LINES, default 80)
#
# The broker has two client listeners: PLAINTEXT on KAFKA_PORT, and SASL_SSL
# on KAFKA_SASL_PORT, which demands SCRAM-SHA-512 credentials over TLS. Each
# start makes a throw-away CA and a broker certificate for 127.0.0.1 and
# localhost (openssl), and the SCRAM user KAFKA_SASL_USER (created when the
# storage is formatted, StorageTool --add-scram). What a client needs is left
# in var/kafka/client/: ca.pem, client.properties (librdkafka's settings
# for the SASL_SSL listener), and classpath (the Java client's jars, for
# the Java producer of docs/INTEGRATION.md).
#
# Environment (all optional):
#   KAFKA_PORT             client port, default 9092; the controller uses KAFKA_PORT+1
#   KAFKA_SASL_PORT        SASL_SSL client port, default KAFKA_PORT+2
#   KAFKA_SASL_USER        default cchc; KAFKA_SASL_PASSWORD, default cchc-test-secret
#   KAFKA_VERSION          default 4.1.2 (with KAFKA_LOG4J_VERSION 2.24.3; 4.2+ wants 2.25.x)
#   KAFKA_START_TIMEOUT    seconds to wait for readiness, default 60
#   KAFKA_STOP_TIMEOUT     seconds between SIGTERM and SIGKILL, default 20
#   KAFKA_HEAP_OPTS        default "-Xms256m -Xmx768m"
#   KAFKA_AUTO_CREATE_TOPICS  default false: tests create their topics with the admin API
#   KAFKA_CACHE_DIR        where fetched jars are kept, default ~/.cache/cchc-pipeline
#                          (not CCHC_*: the pipeline reads those as its configuration)
#                          (outside the clone, so a fresh clone reuses them)
#
# State lives in var/kafka/ (wiped on every start); jars in $KAFKA_CACHE_DIR/kafka-<version>/libs.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

KAFKA_VERSION="${KAFKA_VERSION:-4.1.2}"
KAFKA_LOG4J_VERSION="${KAFKA_LOG4J_VERSION:-2.24.3}"
KAFKA_PORT="${KAFKA_PORT:-9092}"
CONTROLLER_PORT="$((KAFKA_PORT + 1))"
KAFKA_SASL_PORT="${KAFKA_SASL_PORT:-$((KAFKA_PORT + 2))}"
KAFKA_SASL_USER="${KAFKA_SASL_USER:-cchc}"
KAFKA_SASL_PASSWORD="${KAFKA_SASL_PASSWORD:-cchc-test-secret}"
KAFKA_START_TIMEOUT="${KAFKA_START_TIMEOUT:-60}"
KAFKA_STOP_TIMEOUT="${KAFKA_STOP_TIMEOUT:-20}"
KAFKA_HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xms256m -Xmx768m}"
KAFKA_AUTO_CREATE_TOPICS="${KAFKA_AUTO_CREATE_TOPICS:-false}"
KAFKA_LOG_LINES="${KAFKA_LOG_LINES:-80}"

POM="$ROOT/scripts/kafka-pom.xml"
KAFKA_CACHE_DIR="${KAFKA_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/cchc-pipeline}"
CACHE_DIR="$KAFKA_CACHE_DIR/kafka-$KAFKA_VERSION"
LIBS="$CACHE_DIR/libs"
FETCHED_MARKER="$CACHE_DIR/.fetched"

VAR_DIR="$ROOT/var/kafka"
DATA_DIR="$VAR_DIR/data"
LOG_DIR="$VAR_DIR/logs"
PID_FILE="$VAR_DIR/kafka.pid"
SERVER_PROPERTIES="$VAR_DIR/server.properties"
LOG4J_PROPERTIES="$VAR_DIR/log4j2.properties"
SERVER_LOG="$LOG_DIR/server.log"
STDOUT_LOG="$LOG_DIR/stdout.log"
READY_LINE='Transitioning from RECOVERY to RUNNING'
TLS_DIR="$VAR_DIR/tls"
CLIENT_DIR="$VAR_DIR/client"
KEYSTORE_PASSWORD="cchc-test-keystore"

say() { echo "kafka.sh: $*" >&2; }
die() {
    say "error: $*"
    exit 1
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# kill -0 also succeeds on a zombie; treat one as gone.
alive() {
    kill -0 "$1" 2>/dev/null || return 1
    ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null
}

# The saved pid, only if it is still our broker (guards against pid reuse).
running_pid() {
    local pid
    [[ -f "$PID_FILE" ]] || return 1
    pid="$(cat "$PID_FILE" 2>/dev/null)" || return 1
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    alive "$pid" || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'kafka\.Kafka' || return 1
    echo "$pid"
}

# Java 17+ and Maven come with this kind of machine; install them from Debian if not.
ensure_tools() {
    local missing=()
    command -v java >/dev/null || missing+=(openjdk-17-jre-headless)
    command -v mvn >/dev/null || missing+=(maven)
    command -v openssl >/dev/null || missing+=(openssl)
    ((${#missing[@]} == 0)) && return 0
    if ((EUID != 0)) || ! command -v apt-get >/dev/null; then
        die "missing ${missing[*]}: install Java 17+ and Maven"
    fi
    say "installing ${missing[*]} with apt-get"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

cmd_fetch() {
    if [[ -f "$FETCHED_MARKER" ]] && compgen -G "$LIBS/kafka_2.13-$KAFKA_VERSION.jar" >/dev/null; then
        say "jars for Kafka $KAFKA_VERSION already in $LIBS"
        return 0
    fi
    ensure_tools
    say "fetching Kafka $KAFKA_VERSION jars from Maven Central into $LIBS"
    local started=$SECONDS
    # A half-finished earlier attempt is redone from scratch: the marker is written last.
    rm -rf "$CACHE_DIR"
    mkdir -p "$LIBS"
    if ! mvn -B -q -Dstyle.color=never -f "$POM" \
        -Dkafka.version="$KAFKA_VERSION" -Dlog4j.version="$KAFKA_LOG4J_VERSION" \
        org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies \
        -DoutputDirectory="$LIBS" -DincludeScope=runtime >"$CACHE_DIR/fetch.log" 2>&1; then
        cat "$CACHE_DIR/fetch.log" >&2
        die "maven could not fetch the Kafka $KAFKA_VERSION jars (log: $CACHE_DIR/fetch.log)"
    fi
    [[ -f "$LIBS/kafka_2.13-$KAFKA_VERSION.jar" ]] || die "maven finished but kafka_2.13-$KAFKA_VERSION.jar is missing"
    date -u +%FT%TZ >"$FETCHED_MARKER"
    say "fetched $(find "$LIBS" -name '*.jar' | wc -l) jars ($(du -sh "$LIBS" | cut -f1)) in $((SECONDS - started)) s"
}

# A throw-away CA, a broker certificate it signs (for 127.0.0.1 and
# localhost, so that clients verify the broker's name), the broker's PKCS#12
# keystore, and the client's side: the CA and librdkafka's settings.
make_tls() {
    command -v openssl >/dev/null || ensure_tools
    mkdir -p "$TLS_DIR" "$CLIENT_DIR"
    (
        cd "$TLS_DIR"
        openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 7 \
            -subj "/CN=cchc test CA" 2>/dev/null
        openssl req -newkey rsa:2048 -nodes -keyout broker.key -out broker.csr \
            -subj "/CN=localhost" 2>/dev/null
        printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' >broker.ext
        openssl x509 -req -in broker.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 7 \
            -extfile broker.ext -out broker.pem 2>/dev/null
        openssl pkcs12 -export -in broker.pem -inkey broker.key -certfile ca.pem \
            -name broker -out broker.p12 -passout "pass:$KEYSTORE_PASSWORD"
    ) || die "making the test CA and broker certificate failed"
    cp "$TLS_DIR/ca.pem" "$CLIENT_DIR/ca.pem"
    cat >"$CLIENT_DIR/client.properties" <<EOF
# librdkafka settings for the SASL_SSL listener of scripts/kafka.sh (TLS verified against ca.pem).
bootstrap.servers=127.0.0.1:$KAFKA_SASL_PORT
security.protocol=SASL_SSL
sasl.mechanisms=SCRAM-SHA-512
sasl.username=$KAFKA_SASL_USER
sasl.password=$KAFKA_SASL_PASSWORD
ssl.ca.location=$CLIENT_DIR/ca.pem
EOF
    # The Java client and what it needs at run time, from the broker's jars.
    local jar classpath=""
    for jar in "$LIBS"/kafka-clients-*.jar "$LIBS"/slf4j-api-*.jar "$LIBS"/lz4-java-*.jar \
        "$LIBS"/snappy-java-*.jar "$LIBS"/zstd-jni-*.jar; do
        if [[ -f "$jar" ]]; then classpath="${classpath:+$classpath:}$jar"; fi
    done
    printf '%s\n' "$classpath" >"$CLIENT_DIR/classpath"
}

write_config() {
    cat >"$SERVER_PROPERTIES" <<EOF
# Written by scripts/kafka.sh: single-node KRaft broker for tests. Regenerated on every start.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$CONTROLLER_PORT,SASL_SSL://127.0.0.1:$KAFKA_SASL_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,SASL_SSL://127.0.0.1:$KAFKA_SASL_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL
log.dirs=$DATA_DIR

# The SASL_SSL listener: SCRAM-SHA-512 users (made at format time), TLS with
# the throw-away CA's broker certificate; clients are not asked for one.
sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.ssl.keystore.type=PKCS12
listener.name.sasl_ssl.ssl.keystore.location=$TLS_DIR/broker.p12
listener.name.sasl_ssl.ssl.keystore.password=$KEYSTORE_PASSWORD
listener.name.sasl_ssl.ssl.client.auth=none

# One node: every internal topic must have replication factor 1, or consumer
# groups and transactions hang waiting for replicas that never come.
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=10
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
num.partitions=1
auto.create.topics.enable=$KAFKA_AUTO_CREATE_TOPICS

# The default 3 s delay would slow down every first join of a consumer group.
group.initial.rebalance.delay.ms=0

# Small machine: few threads, and a 2 MiB cleaner buffer instead of 128 MiB of heap.
num.network.threads=2
num.io.threads=2
num.recovery.threads.per.data.dir=1
background.threads=2
log.cleaner.threads=1
log.cleaner.dedupe.buffer.size=2097152
EOF

    cat >"$LOG4J_PROPERTIES" <<'EOF'
# Written by scripts/kafka.sh. All broker logging goes to ${kafka.logs.dir}/server.log.
status = warn
name = kafka-test-broker

appender.file.type = File
appender.file.name = FILE
appender.file.fileName = ${sys:kafka.logs.dir}/server.log
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n

rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE

logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.statechange.name = state.change.logger
logger.statechange.level = WARN
EOF
}

JAVA_LOG_OPTS=()
set_java_log_opts() {
    JAVA_LOG_OPTS=(
        "-Dlog4j2.configurationFile=$LOG4J_PROPERTIES"
        "-Dkafka.logs.dir=$LOG_DIR"
    )
}

tail_log() {
    local n="${1:-$KAFKA_LOG_LINES}"
    if [[ -s "$SERVER_LOG" ]]; then
        echo "---- last $n lines of ${SERVER_LOG#"$ROOT"/} ----"
        tail -n "$n" "$SERVER_LOG"
    fi
    if [[ -s "$STDOUT_LOG" ]]; then
        echo "---- last $n lines of ${STDOUT_LOG#"$ROOT"/} ----"
        tail -n "$n" "$STDOUT_LOG"
    fi
}

cmd_start() {
    cmd_fetch
    command -v java >/dev/null || ensure_tools
    if running_pid >/dev/null; then
        say "a broker from an earlier start is still running; stopping it first"
        cmd_stop
    fi
    # Wiped before the port checks too, so `logs` never shows an earlier run's log.
    rm -rf "$VAR_DIR"
    if port_open "$KAFKA_PORT"; then
        die "something else already listens on 127.0.0.1:$KAFKA_PORT (set KAFKA_PORT to use another port)"
    fi
    if port_open "$CONTROLLER_PORT"; then
        die "something else already listens on 127.0.0.1:$CONTROLLER_PORT, the controller port (KAFKA_PORT+1)"
    fi
    if port_open "$KAFKA_SASL_PORT"; then
        die "something else already listens on 127.0.0.1:$KAFKA_SASL_PORT, the SASL_SSL port (KAFKA_SASL_PORT)"
    fi

    local started=$SECONDS
    mkdir -p "$DATA_DIR" "$LOG_DIR"
    make_tls
    write_config
    set_java_log_opts

    local cp="$LIBS/*"
    # A cluster id is 16 bytes in base64url without padding (22 characters); the
    # first character is forced to 'A' because an id must not start with '-'.
    local cluster_id
    cluster_id="$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')"
    cluster_id="A${cluster_id:1}"
    java -Xmx256m "${JAVA_LOG_OPTS[@]}" -cp "$cp" kafka.tools.StorageTool \
        format -t "$cluster_id" -c "$SERVER_PROPERTIES" \
        --add-scram "SCRAM-SHA-512=[name=$KAFKA_SASL_USER,password=$KAFKA_SASL_PASSWORD]" \
        >"$LOG_DIR/format.log" 2>&1 ||
        {
            cat "$LOG_DIR/format.log" >&2
            die "formatting the storage directory failed"
        }

    # setsid: the broker is not in the caller's process group, so a Ctrl-C goes
    # to the caller (whose trap runs `stop`) instead of killing the JVM mid-way.
    # shellcheck disable=SC2086 # KAFKA_HEAP_OPTS is a list of JVM flags
    setsid java $KAFKA_HEAP_OPTS -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
        -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true \
        "${JAVA_LOG_OPTS[@]}" -cp "$cp" kafka.Kafka "$SERVER_PROPERTIES" \
        </dev/null >"$STDOUT_LOG" 2>&1 &
    local pid=$!
    echo "$pid" >"$PID_FILE"

    local deadline=$((SECONDS + KAFKA_START_TIMEOUT))
    while true; do
        if ! alive "$pid"; then
            tail_log >&2
            die "the broker exited during startup"
        fi
        if port_open "$KAFKA_PORT" && port_open "$KAFKA_SASL_PORT" &&
            grep -q "$READY_LINE" "$SERVER_LOG" 2>/dev/null; then
            break
        fi
        if ((SECONDS >= deadline)); then
            tail_log >&2
            cmd_stop || true
            die "the broker was not ready within ${KAFKA_START_TIMEOUT} s"
        fi
        sleep 0.25
    done
    say "Kafka $KAFKA_VERSION ready on 127.0.0.1:$KAFKA_PORT, SASL_SSL on 127.0.0.1:$KAFKA_SASL_PORT (pid $pid) in $((SECONDS - started)) s; client settings: ${CLIENT_DIR#"$ROOT"/}/client.properties"
}

cmd_stop() {
    local pid
    if ! pid="$(running_pid)"; then
        rm -f "$PID_FILE"
        say "not running"
        return 0
    fi
    kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + KAFKA_STOP_TIMEOUT))
    while alive "$pid"; do
        if ((SECONDS >= deadline)); then
            say "broker (pid $pid) still running after ${KAFKA_STOP_TIMEOUT} s; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            break
        fi
        sleep 0.2
    done
    while alive "$pid"; do sleep 0.1; done
    rm -f "$PID_FILE"
    say "stopped (pid $pid)"
}

cmd_status() {
    local pid
    if pid="$(running_pid)" && port_open "$KAFKA_PORT"; then
        echo "running: pid $pid, 127.0.0.1:$KAFKA_PORT"
        return 0
    fi
    echo "not running"
    return 1
}

cmd_logs() {
    if [[ ! -s "$SERVER_LOG" && ! -s "$STDOUT_LOG" ]]; then
        echo "no broker log in ${LOG_DIR#"$ROOT"/}"
        return 0
    fi
    tail_log "${1:-$KAFKA_LOG_LINES}"
}

case "${1:-}" in
fetch) cmd_fetch ;;
start) cmd_start ;;
stop) cmd_stop ;;
status) cmd_status ;;
logs) cmd_logs "${2:-}" ;;
*)
    echo "usage: bash scripts/kafka.sh fetch|start|stop|status|logs [lines]" >&2
    exit 2
    ;;
esac
