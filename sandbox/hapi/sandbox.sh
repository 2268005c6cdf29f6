#!/usr/bin/env bash
# FHIR test sandbox: HAPI FHIR JPA server (in-memory H2) on http://127.0.0.1:<port>/fhir
#
#   sandbox.sh build                                   build the jar (skipped when up to date)
#   sandbox.sh start [--port N] [--fhir-version R4|R5] build if needed, start in background,
#                                                      wait for /fhir/metadata, print the base URL
#   sandbox.sh stop                                    stop the server started by `start`
#   sandbox.sh restart [same options as start]         stop + start (fresh, empty database)
#   sandbox.sh status                                  exit 0 if running and answering
#   sandbox.sh wait [--timeout S]                      wait until the running server answers
#
# Environment:
#   HAPI_PORT            default port (8089)
#   HAPI_FHIR_VERSION    default FHIR version (R4)
#   HAPI_XMX             Java max heap (default 1g for R4, 1536m for R5)
#   HAPI_JAVA_OPTS       extra JVM options
#   HAPI_START_TIMEOUT   seconds to wait for /metadata (default 240)
#   HAPI_MVN_ARGS        extra Maven arguments for `build` (e.g. -Dmaven.repo.local=...)
#
# Only the base URL goes to stdout (start/wait/status), so `BASE=$(sandbox.sh start)` works;
# progress and errors go to stderr.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
RUN_DIR="$HERE/run"
PID_FILE="$RUN_DIR/hapi.pid"
LOG_FILE="$RUN_DIR/hapi.log"
STATE_FILE="$RUN_DIR/hapi.state"   # "<port> <fhir-version>" of the running instance
JAR="$HERE/target/hapi-sandbox.jar"

DEFAULT_PORT="${HAPI_PORT:-8089}"
DEFAULT_VERSION="${HAPI_FHIR_VERSION:-R4}"
START_TIMEOUT="${HAPI_START_TIMEOUT:-240}"

log() { echo "[hapi-sandbox] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

base_url() { echo "http://127.0.0.1:$1/fhir"; }

http_code() {
	# prints the HTTP status of GET <url>, or 000 when nothing answers
	curl -s -o /dev/null --max-time 10 -w '%{http_code}' "$1" 2>/dev/null || true
}

running_pid() {
	# prints the pid from the pid file if that process is alive and is our jar
	[[ -f "$PID_FILE" ]] || return 1
	local pid
	pid="$(cat "$PID_FILE" 2>/dev/null || true)"
	[[ "$pid" =~ ^[0-9]+$ ]] || return 1
	kill -0 "$pid" 2>/dev/null || return 1
	grep -q 'hapi-sandbox' "/proc/$pid/cmdline" 2>/dev/null || return 1
	echo "$pid"
}

state_port() { [[ -f "$STATE_FILE" ]] && awk '{print $1}' "$STATE_FILE" || echo "$DEFAULT_PORT"; }
state_version() { [[ -f "$STATE_FILE" ]] && awk '{print $2}' "$STATE_FILE" || echo "$DEFAULT_VERSION"; }

needs_build() {
	[[ -f "$JAR" ]] || return 0
	[[ -n "$(find "$HERE/pom.xml" "$HERE/src" -newer "$JAR" -print -quit 2>/dev/null)" ]]
}

cmd_build() {
	if ! needs_build; then
		log "jar is up to date: $JAR"
		return 0
	fi
	command -v mvn >/dev/null || die "mvn not found (Maven 3.8+ and Java 17 are needed)"
	log "building (mvn -q -B package -DskipTests) ..."
	local t0=$SECONDS
	# shellcheck disable=SC2086
	if ! mvn -q -B -f "$HERE/pom.xml" package -DskipTests ${HAPI_MVN_ARGS:-} >&2; then
		die "maven build failed"
	fi
	[[ -f "$JAR" ]] || die "build finished but $JAR is missing"
	touch "$JAR"
	log "built $JAR in $((SECONDS - t0)) s"
}

wait_ready() {
	# wait_ready <port> <timeout> [pid]
	local port="$1" timeout="$2" pid="${3:-}" url code t0=$SECONDS
	url="$(base_url "$port")/metadata"
	while true; do
		code="$(http_code "$url")"
		[[ "$code" == "200" ]] && return 0
		if [[ -n "$pid" ]] && ! kill -0 "$pid" 2>/dev/null; then
			log "server process $pid exited before answering; last log lines ($LOG_FILE):"
			tail -n 60 "$LOG_FILE" >&2 || true
			return 1
		fi
		if ((SECONDS - t0 >= timeout)); then
			log "timed out after ${timeout}s waiting for $url (last status $code); last log lines ($LOG_FILE):"
			tail -n 60 "$LOG_FILE" >&2 || true
			return 2
		fi
		sleep 2
	done
}

cmd_start() {
	local port="$DEFAULT_PORT" version="$DEFAULT_VERSION"
	while (($#)); do
		case "$1" in
			--port) port="${2:?--port needs a value}"; shift 2 ;;
			--port=*) port="${1#*=}"; shift ;;
			--fhir-version) version="${2:?--fhir-version needs a value}"; shift 2 ;;
			--fhir-version=*) version="${1#*=}"; shift ;;
			*) die "unknown option for start: $1" ;;
		esac
	done
	[[ "$port" =~ ^[0-9]+$ ]] || die "bad port: $port"
	version="$(echo "$version" | tr '[:lower:]' '[:upper:]')"
	[[ "$version" == "R4" || "$version" == "R5" ]] || die "bad FHIR version: $version (R4 or R5)"

	local pid
	if pid="$(running_pid)"; then
		if [[ "$(state_port)" == "$port" && "$(state_version)" == "$version" ]]; then
			log "already running (pid $pid)"
			wait_ready "$port" "$START_TIMEOUT" "$pid" || exit 1
			base_url "$port"
			return 0
		fi
		die "already running (pid $pid) on port $(state_port) with $(state_version); run '$0 stop' first"
	fi
	if [[ "$(http_code "$(base_url "$port")/metadata")" != "000" ]]; then
		die "something else already answers on 127.0.0.1:$port"
	fi

	local xmx="${HAPI_XMX:-}"
	if [[ -z "$xmx" ]]; then
		# measured live heap after start-up: R4 ~220 MB, R5 ~650 MB
		if [[ "$version" == "R5" ]]; then xmx=1536m; else xmx=1g; fi
	fi

	cmd_build
	command -v java >/dev/null || die "java not found (Java 17 is needed)"
	mkdir -p "$RUN_DIR"
	rm -f "$PID_FILE" "$STATE_FILE"
	log "starting HAPI FHIR $version on $(base_url "$port") (-Xmx$xmx, log: $LOG_FILE)"
	local t0=$SECONDS
	# setsid: own session, so a Ctrl-C / SIGHUP of the caller does not hit the server.
	# shellcheck disable=SC2086
	setsid nohup java -Xmx"$xmx" -XX:+UseSerialGC ${HAPI_JAVA_OPTS:-} \
		-jar "$JAR" --server.port="$port" --fhir-version="$version" \
		</dev/null >"$LOG_FILE" 2>&1 &
	pid=$!
	echo "$pid" >"$PID_FILE"
	echo "$port $version" >"$STATE_FILE"
	if ! wait_ready "$port" "$START_TIMEOUT" "$pid"; then
		kill "$pid" 2>/dev/null || true
		rm -f "$PID_FILE" "$STATE_FILE"
		die "start failed"
	fi
	log "up after $((SECONDS - t0)) s (pid $pid)"
	base_url "$port"
}

cmd_stop() {
	local pid
	if ! pid="$(running_pid)"; then
		log "not running"
		rm -f "$PID_FILE" "$STATE_FILE"
		return 0
	fi
	log "stopping pid $pid"
	kill -TERM "$pid" 2>/dev/null || true
	for _ in $(seq 1 60); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.5
	done
	if kill -0 "$pid" 2>/dev/null; then
		log "still alive after 30 s, sending SIGKILL"
		kill -KILL "$pid" 2>/dev/null || true
		sleep 1
	fi
	rm -f "$PID_FILE" "$STATE_FILE"
	log "stopped"
}

cmd_status() {
	local pid port
	if ! pid="$(running_pid)"; then
		log "not running"
		return 3
	fi
	port="$(state_port)"
	if [[ "$(http_code "$(base_url "$port")/metadata")" == "200" ]]; then
		log "running (pid $pid, FHIR $(state_version))"
		base_url "$port"
		return 0
	fi
	log "process $pid is alive but $(base_url "$port")/metadata does not answer 200 yet"
	return 1
}

cmd_wait() {
	local timeout="$START_TIMEOUT" pid port
	while (($#)); do
		case "$1" in
			--timeout) timeout="${2:?--timeout needs a value}"; shift 2 ;;
			--timeout=*) timeout="${1#*=}"; shift ;;
			*) die "unknown option for wait: $1" ;;
		esac
	done
	pid="$(running_pid)" || die "not running (start it with '$0 start')"
	port="$(state_port)"
	wait_ready "$port" "$timeout" "$pid" || exit 1
	base_url "$port"
}

usage() {
	sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//' >&2
}

main() {
	local cmd="${1:-}"
	[[ $# -gt 0 ]] && shift
	case "$cmd" in
		build) cmd_build "$@" ;;
		start) cmd_start "$@" ;;
		stop) cmd_stop "$@" ;;
		restart) cmd_stop; cmd_start "$@" ;;
		status) cmd_status "$@" ;;
		wait) cmd_wait "$@" ;;
		-h | --help | help) usage ;;
		*) usage; exit 2 ;;
	esac
}

main "$@"
