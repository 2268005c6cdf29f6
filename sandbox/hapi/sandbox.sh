#!/usr/bin/env bash
# FHIR test sandbox: HAPI FHIR JPA servers (in-memory H2) and profile proxies, all on 127.0.0.1
#
#   sandbox.sh build                        build the jar (skipped when up to date)
#   sandbox.sh start [--name NAME] [--port N] [--fhir-version R4|R5]
#                                           a HAPI instance: build if needed, start in background,
#                                           wait for /fhir/metadata, print the base URL. NAME is
#                                           "main" (default); any other name (e.g. research) is a
#                                           separate server with its own empty database
#   sandbox.sh start --profile P [--port N] [--rate R]
#                                           P = full: the main HAPI itself (same as plain start);
#                                           P = bulk-only | search-only | throttled: a loopback proxy
#                                           (sandbox/profiles/proxy.py) in front of the main HAPI,
#                                           which is started first if it is not running
#   sandbox.sh start-all [--port N] [--fhir-version V]
#                                           main HAPI on N, research HAPI on N+1, proxies bulk-only
#                                           N+2, search-only N+3, throttled N+4; prints NAME=URL lines
#                                           (the environment variables the tests read)
#   sandbox.sh stop [--name NAME | --profile P]   stop one (default: the main HAPI only)
#   sandbox.sh stop-all                     stop every instance and proxy started from this directory
#   sandbox.sh restart [start options]      stop + start (a HAPI restart gives a fresh, empty database)
#   sandbox.sh status [--name NAME | --profile P] exit 0 if running and answering (prints the URL)
#   sandbox.sh status-all                   NAME=URL lines of what runs; exit 0 if all five answer
#   sandbox.sh wait [--name NAME] [--timeout S]   wait until a running HAPI answers
#
# Environment:
#   HAPI_PORT                 port of the main HAPI (8089)
#   SANDBOX_RESEARCH_PORT     port of the research HAPI (main port + 1)
#   SANDBOX_BULK_ONLY_PORT    port of the bulk-only proxy (main port + 2)
#   SANDBOX_SEARCH_ONLY_PORT  port of the search-only proxy (main port + 3)
#   SANDBOX_THROTTLED_PORT    port of the throttled proxy (main port + 4)
#   SANDBOX_THROTTLE_RPS      throttled: requests per second before 429 (10)
#   HAPI_FHIR_VERSION         default FHIR version (R4)
#   HAPI_XMX                  Java max heap (default 1g for R4, 1536m for R5)
#   HAPI_JAVA_OPTS            extra JVM options
#   HAPI_START_TIMEOUT        seconds to wait for /metadata (default 240)
#   HAPI_MVN_ARGS             extra Maven arguments for `build` (e.g. -Dmaven.repo.local=...)
#   SANDBOX_PYTHON            Python 3 for the proxies (python3; standard library only)
#
# Only URLs go to stdout (start/wait/status print one base URL, start-all/status-all NAME=URL
# lines), so `BASE=$(sandbox.sh start)` works; progress and errors go to stderr.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
RUN_DIR="$HERE/run"
JAR="$HERE/target/hapi-sandbox.jar"
PROXY="$(cd "$HERE/.." && pwd)/profiles/proxy.py"
PYTHON="${SANDBOX_PYTHON:-python3}"

DEFAULT_PORT="${HAPI_PORT:-8089}"
DEFAULT_VERSION="${HAPI_FHIR_VERSION:-R4}"
START_TIMEOUT="${HAPI_START_TIMEOUT:-240}"
THROTTLE_RPS="${SANDBOX_THROTTLE_RPS:-10}"
PROFILES="bulk-only search-only throttled"

log() { echo "[hapi-sandbox] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

base_url() { echo "http://127.0.0.1:$1/fhir"; }

http_code() {
	# prints the HTTP status of GET <url>, or 000 when nothing answers
	curl -s -o /dev/null --max-time 10 -w '%{http_code}' "$1" 2>/dev/null || true
}

check_port() {
	if ! [[ "$1" =~ ^[0-9]+$ ]] || (($1 < 1 || $1 > 65535)); then die "bad port: $1"; fi
}

# -- files: run/hapi.{pid,log,state} for "main", run/hapi-NAME.* for other instances,
#    run/proxy-PROFILE.* for the proxies. A state file holds "<port> <fhir-version>" (HAPI) or
#    "<port> <upstream-port> <rate>" (proxy).
hapi_stem() { if [[ "$1" == main ]]; then echo "$RUN_DIR/hapi"; else echo "$RUN_DIR/hapi-$1"; fi; }
proxy_stem() { echo "$RUN_DIR/proxy-$1"; }

check_name() { [[ "$1" =~ ^[a-z0-9][a-z0-9_-]{0,30}$ ]] || die "bad instance name: $1 (a-z, 0-9, -, _)"; }
check_profile() {
	case "$1" in
		full | bulk-only | search-only | throttled) ;;
		*) die "unknown profile: $1 (full, bulk-only, search-only, throttled)" ;;
	esac
}

alive_pid() {
	# alive_pid <stem> <cmdline pattern...>: prints the pid from <stem>.pid if that process is
	# alive and its command line holds every pattern (NUL-separated arguments as spaces)
	local stem="$1" pid cmd pattern
	shift
	[[ -f "$stem.pid" ]] || return 1
	pid="$(cat "$stem.pid" 2>/dev/null || true)"
	[[ "$pid" =~ ^[0-9]+$ ]] || return 1
	kill -0 "$pid" 2>/dev/null || return 1
	cmd="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)"
	for pattern in "$@"; do
		[[ "$cmd" == *"$pattern"* ]] || return 1
	done
	echo "$pid"
}

hapi_pid() {
	# main: any hapi-sandbox process of run/hapi.pid (also one started before instance names)
	if [[ "$1" == main ]]; then
		alive_pid "$(hapi_stem main)" hapi-sandbox
	else
		alive_pid "$(hapi_stem "$1")" hapi-sandbox "--sandbox.instance-name=$1"
	fi
}
proxy_pid() { alive_pid "$(proxy_stem "$1")" proxy.py "--profile $1 "; }

state_field() {
	# state_field <stem> <n> <default>
	local f="$1.state"
	if [[ -f "$f" ]]; then awk -v n="$2" '{print $n}' "$f"; else echo "$3"; fi
}

main_port() {
	# the running main HAPI's port, else the configured one
	if hapi_pid main >/dev/null; then state_field "$(hapi_stem main)" 1 "$DEFAULT_PORT"; else echo "$DEFAULT_PORT"; fi
}

# default ports, relative to the main HAPI's port unless set in the environment
research_port() { echo "${SANDBOX_RESEARCH_PORT:-$(($1 + 1))}"; }
profile_port() {
	# profile_port <profile> <main port>
	case "$1" in
		bulk-only) echo "${SANDBOX_BULK_ONLY_PORT:-$(($2 + 2))}" ;;
		search-only) echo "${SANDBOX_SEARCH_ONLY_PORT:-$(($2 + 3))}" ;;
		throttled) echo "${SANDBOX_THROTTLED_PORT:-$(($2 + 4))}" ;;
		full) echo "$2" ;;
	esac
}
env_name() {
	case "$1" in
		main | full) echo FHIR_SANDBOX_URL ;;
		research) echo FHIR_RESEARCH_SANDBOX_URL ;;
		bulk-only) echo FHIR_SANDBOX_BULK_ONLY_URL ;;
		search-only) echo FHIR_SANDBOX_SEARCH_ONLY_URL ;;
		throttled) echo FHIR_SANDBOX_THROTTLED_URL ;;
		*) echo "FHIR_SANDBOX_$(echo "$1" | tr '[:lower:]-' '[:upper:]_')_URL" ;;
	esac
}

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
	# wait_ready <port> <timeout> <pid> <log file> [poll seconds]
	local port="$1" timeout="$2" pid="$3" logf="$4" poll="${5:-2}" url code t0=$SECONDS
	url="$(base_url "$port")/metadata"
	while true; do
		code="$(http_code "$url")"
		[[ "$code" == "200" ]] && return 0
		if ! kill -0 "$pid" 2>/dev/null; then
			log "process $pid exited before answering; last log lines ($logf):"
			tail -n 60 "$logf" >&2 || true
			return 1
		fi
		if ((SECONDS - t0 >= timeout)); then
			log "timed out after ${timeout}s waiting for $url (last status $code); last log lines ($logf):"
			tail -n 60 "$logf" >&2 || true
			return 2
		fi
		sleep "$poll"
	done
}

# -- HAPI instances ----------------------------------------------------------------------------------

# launch_hapi <name> <port> <version>: start in the background (no wait). Returns 0 when it was
# launched or already runs with that port and version.
launch_hapi() {
	local name="$1" port="$2" version="$3" stem pid
	stem="$(hapi_stem "$name")"
	if pid="$(hapi_pid "$name")"; then
		if [[ "$(state_field "$stem" 1 "")" == "$port" && "$(state_field "$stem" 2 "")" == "$version" ]]; then
			log "$name: already running (pid $pid)"
			return 0
		fi
		die "$name: already running (pid $pid) on port $(state_field "$stem" 1 "?") with $(state_field "$stem" 2 "?"); run '$0 stop --name $name' first"
	fi
	if [[ "$(http_code "$(base_url "$port")/metadata")" != "000" ]]; then
		die "something else already answers on 127.0.0.1:$port"
	fi

	local xmx="${HAPI_XMX:-}"
	if [[ -z "$xmx" ]]; then
		# measured live heap after start-up: R4 ~220 MB, R5 ~650 MB
		if [[ "$version" == "R5" ]]; then xmx=1536m; else xmx=1g; fi
	fi
	# Base URLs of the profile proxies in front of this instance count as local references.
	local local_ports="" p
	if [[ "$name" == main ]]; then
		for p in $PROFILES; do local_ports+="${local_ports:+,}$(profile_port "$p" "$port")"; done
	fi

	command -v java >/dev/null || die "java not found (Java 17 is needed)"
	mkdir -p "$RUN_DIR"
	rm -f "$stem.pid" "$stem.state" "$stem.t0"
	log "$name: starting HAPI FHIR $version on $(base_url "$port") (-Xmx$xmx, log: $stem.log)"
	# setsid: own session, so a Ctrl-C / SIGHUP of the caller does not hit the server.
	# shellcheck disable=SC2086
	setsid nohup java -Xmx"$xmx" -XX:+UseSerialGC ${HAPI_JAVA_OPTS:-} \
		-jar "$JAR" --server.port="$port" --fhir-version="$version" \
		--sandbox.instance-name="$name" --sandbox.local-ports="$local_ports" \
		</dev/null >"$stem.log" 2>&1 &
	pid=$!
	echo "$pid" >"$stem.pid"
	echo "$port $version" >"$stem.state"
	date +%s >"$stem.t0"
}

# await_hapi <name>: wait until the launched instance answers; kill it if it does not.
await_hapi() {
	local name="$1" stem pid port t0
	stem="$(hapi_stem "$name")"
	# The launched child is a shell until setsid/nohup have exec'd java, so its command line does
	# not name the jar yet; on a busy machine that takes a moment.
	local tries=0
	until pid="$(hapi_pid "$name")"; do
		tries=$((tries + 1))
		((tries <= 50)) || die "$name: not running"
		sleep 0.1
	done
	port="$(state_field "$stem" 1 "")"
	t0="$(cat "$stem.t0" 2>/dev/null || date +%s)"
	if ! wait_ready "$port" "$START_TIMEOUT" "$pid" "$stem.log"; then
		kill "$pid" 2>/dev/null || true
		rm -f "$stem.pid" "$stem.state" "$stem.t0"
		die "$name: start failed"
	fi
	if [[ -f "$stem.t0" ]]; then
		log "$name: up after $(($(date +%s) - t0)) s (pid $pid, RSS $(($(ps -o rss= -p "$pid") / 1024)) MB)"
		rm -f "$stem.t0"
	fi
}

start_hapi() {
	# start_hapi <name> <port> <version>
	cmd_build
	launch_hapi "$@"
	await_hapi "$1"
	base_url "$2"
}

stop_pid() {
	# stop_pid <label> <pid> <stem>
	local label="$1" pid="$2" stem="$3"
	log "$label: stopping pid $pid"
	kill -TERM "$pid" 2>/dev/null || true
	for _ in $(seq 1 60); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.5
	done
	if kill -0 "$pid" 2>/dev/null; then
		log "$label: still alive after 30 s, sending SIGKILL"
		kill -KILL "$pid" 2>/dev/null || true
		sleep 1
	fi
	rm -f "$stem.pid" "$stem.state" "$stem.t0"
	log "$label: stopped"
}

stop_hapi() {
	local name="$1" pid stem
	stem="$(hapi_stem "$name")"
	if ! pid="$(hapi_pid "$name")"; then
		log "$name: not running"
		rm -f "$stem.pid" "$stem.state" "$stem.t0"
		return 0
	fi
	stop_pid "$name" "$pid" "$stem"
}

# -- profile proxies ---------------------------------------------------------------------------------

start_proxy() {
	# start_proxy <profile> <port> <upstream port> <rate>; prints the URL
	local profile="$1" port="$2" upstream="$3" rate="$4" stem pid
	stem="$(proxy_stem "$profile")"
	if pid="$(proxy_pid "$profile")"; then
		if [[ "$(state_field "$stem" 1 "")" == "$port" && "$(state_field "$stem" 2 "")" == "$upstream" \
			&& "$(state_field "$stem" 3 "")" == "$rate" ]]; then
			log "$profile: proxy already running (pid $pid)"
			base_url "$port"
			return 0
		fi
		die "$profile: proxy already running (pid $pid) as '$(cat "$stem.state")'; run '$0 stop --profile $profile' first"
	fi
	if [[ "$(http_code "$(base_url "$port")/metadata")" != "000" ]]; then
		die "something else already answers on 127.0.0.1:$port"
	fi
	command -v "$PYTHON" >/dev/null || die "$PYTHON not found (Python 3.9+ is needed for the proxies)"
	mkdir -p "$RUN_DIR"
	rm -f "$stem.pid" "$stem.state"
	log "$profile: starting proxy on $(base_url "$port") -> $(base_url "$upstream") (log: $stem.log)"
	setsid nohup "$PYTHON" "$PROXY" --profile "$profile" --port "$port" --upstream-port "$upstream" \
		--rate "$rate" </dev/null >"$stem.log" 2>&1 &
	pid=$!
	echo "$pid" >"$stem.pid"
	echo "$port $upstream $rate" >"$stem.state"
	if ! wait_ready "$port" 60 "$pid" "$stem.log" 0.2; then
		kill "$pid" 2>/dev/null || true
		rm -f "$stem.pid" "$stem.state"
		die "$profile: proxy start failed"
	fi
	log "$profile: up (pid $pid)"
	base_url "$port"
}

stop_proxy() {
	local profile="$1" pid stem
	stem="$(proxy_stem "$profile")"
	if ! pid="$(proxy_pid "$profile")"; then
		rm -f "$stem.pid" "$stem.state"
		return 0
	fi
	stop_pid "$profile proxy" "$pid" "$stem"
}

# -- commands ----------------------------------------------------------------------------------------

cmd_start() {
	local name=main profile="" port="" version="$DEFAULT_VERSION" rate="$THROTTLE_RPS"
	while (($#)); do
		case "$1" in
			--name) name="${2:?--name needs a value}"; shift 2 ;;
			--name=*) name="${1#*=}"; shift ;;
			--profile) profile="${2:?--profile needs a value}"; shift 2 ;;
			--profile=*) profile="${1#*=}"; shift ;;
			--port) port="${2:?--port needs a value}"; shift 2 ;;
			--port=*) port="${1#*=}"; shift ;;
			--fhir-version) version="${2:?--fhir-version needs a value}"; shift 2 ;;
			--fhir-version=*) version="${1#*=}"; shift ;;
			--rate) rate="${2:?--rate needs a value}"; shift 2 ;;
			--rate=*) rate="${1#*=}"; shift ;;
			*) die "unknown option for start: $1" ;;
		esac
	done
	version="$(echo "$version" | tr '[:lower:]' '[:upper:]')"
	[[ "$version" == "R4" || "$version" == "R5" ]] || die "bad FHIR version: $version (R4 or R5)"
	[[ "$rate" =~ ^[0-9]+([.][0-9]+)?$ ]] || die "bad rate: $rate"
	check_name "$name"

	if [[ -n "$profile" && "$profile" != full ]]; then
		check_profile "$profile"
		[[ "$name" == main ]] || die "--profile and --name do not go together (profiles front the main HAPI)"
		local upstream
		if ! hapi_pid main >/dev/null; then
			start_hapi main "$DEFAULT_PORT" "$version" >/dev/null
		fi
		upstream="$(state_field "$(hapi_stem main)" 1 "$DEFAULT_PORT")"
		port="${port:-$(profile_port "$profile" "$upstream")}"
		check_port "$port"
		start_proxy "$profile" "$port" "$upstream" "$rate"
		return 0
	fi
	[[ -z "$profile" || "$name" == main ]] || die "--profile full is the main HAPI; drop --name"
	if [[ -z "$port" ]]; then
		# another instance: next to the main HAPI's port (the running one's, else HAPI_PORT)
		if [[ "$name" == main ]]; then port="$DEFAULT_PORT"; else port="$(research_port "$(main_port)")"; fi
	fi
	check_port "$port"
	start_hapi "$name" "$port" "$version"
}

cmd_start_all() {
	local port="$DEFAULT_PORT" version="$DEFAULT_VERSION"
	while (($#)); do
		case "$1" in
			--port) port="${2:?--port needs a value}"; shift 2 ;;
			--port=*) port="${1#*=}"; shift ;;
			--fhir-version) version="${2:?--fhir-version needs a value}"; shift 2 ;;
			--fhir-version=*) version="${1#*=}"; shift ;;
			*) die "unknown option for start-all: $1" ;;
		esac
	done
	check_port "$port"
	version="$(echo "$version" | tr '[:lower:]' '[:upper:]')"
	[[ "$version" == "R4" || "$version" == "R5" ]] || die "bad FHIR version: $version (R4 or R5)"
	local research t0=$SECONDS p out=""
	research="$(research_port "$port")"
	check_port "$research"
	cmd_build
	# One JVM after the other: on 2 cores that is faster than both at once (README, measured).
	launch_hapi main "$port" "$version"
	await_hapi main
	launch_hapi research "$research" "$version"
	await_hapi research
	out+="$(env_name main)=$(base_url "$port")"$'\n'
	out+="$(env_name research)=$(base_url "$research")"$'\n'
	for p in $PROFILES; do
		out+="$(env_name "$p")=$(start_proxy "$p" "$(profile_port "$p" "$port")" "$port" "$THROTTLE_RPS")"$'\n'
	done
	out+="FHIR_SANDBOX_THROTTLE_RPS=$THROTTLE_RPS"$'\n'
	log "all up after $((SECONDS - t0)) s"
	printf '%s' "$out"
}

parse_target() {
	# parse_target <command> [--name NAME | --profile P] ...: sets TARGET_KIND/TARGET
	TARGET_KIND=hapi TARGET=main
	local cmd="$1"
	shift
	while (($#)); do
		case "$1" in
			--name) TARGET_KIND=hapi TARGET="${2:?--name needs a value}"; shift 2 ;;
			--name=*) TARGET_KIND=hapi TARGET="${1#*=}"; shift ;;
			--profile) TARGET_KIND=proxy TARGET="${2:?--profile needs a value}"; shift 2 ;;
			--profile=*) TARGET_KIND=proxy TARGET="${1#*=}"; shift ;;
			--timeout) TIMEOUT="${2:?--timeout needs a value}"; shift 2 ;;
			--timeout=*) TIMEOUT="${1#*=}"; shift ;;
			*) die "unknown option for $cmd: $1" ;;
		esac
	done
	if [[ "$TARGET_KIND" == proxy ]]; then
		check_profile "$TARGET"
		[[ "$TARGET" == full ]] && TARGET_KIND=hapi TARGET=main
	else
		check_name "$TARGET"
	fi
	return 0
}

cmd_stop() {
	parse_target stop "$@"
	if [[ "$TARGET_KIND" == proxy ]]; then stop_proxy "$TARGET"; else stop_hapi "$TARGET"; fi
}

cmd_stop_all() {
	local p stem name
	for p in $PROFILES; do stop_proxy "$p"; done
	for stem in "$RUN_DIR"/hapi*.pid; do
		[[ -e "$stem" ]] || continue
		name="$(basename "$stem" .pid)"
		if [[ "$name" == hapi ]]; then name=main; else name="${name#hapi-}"; fi
		stop_hapi "$name"
	done
}

status_one() {
	# status_one <kind> <target>: 0 answering (prints URL), 1 starting, 3 not running
	local kind="$1" target="$2" pid stem port
	if [[ "$kind" == proxy ]]; then
		stem="$(proxy_stem "$target")"
		pid="$(proxy_pid "$target")" || { log "$target: proxy not running"; return 3; }
	else
		stem="$(hapi_stem "$target")"
		pid="$(hapi_pid "$target")" || { log "$target: not running"; return 3; }
	fi
	port="$(state_field "$stem" 1 "")"
	if [[ "$(http_code "$(base_url "$port")/metadata")" == "200" ]]; then
		log "$target: running (pid $pid, $(cat "$stem.state"))"
		base_url "$port"
		return 0
	fi
	log "$target: process $pid is alive but $(base_url "$port")/metadata does not answer 200"
	return 1
}

cmd_status() {
	parse_target status "$@"
	status_one "$TARGET_KIND" "$TARGET"
}

cmd_status_all() {
	local rc=0 url t
	for t in hapi:main hapi:research proxy:bulk-only proxy:search-only proxy:throttled; do
		if url="$(status_one "${t%%:*}" "${t#*:}")"; then
			echo "$(env_name "${t#*:}")=$url"
		else
			rc=1
		fi
	done
	return "$rc"
}

cmd_wait() {
	TIMEOUT="$START_TIMEOUT"
	parse_target wait "$@"
	[[ "$TARGET_KIND" == hapi ]] || die "wait is for HAPI instances (--name)"
	local pid stem port
	stem="$(hapi_stem "$TARGET")"
	pid="$(hapi_pid "$TARGET")" || die "$TARGET: not running (start it with '$0 start')"
	port="$(state_field "$stem" 1 "")"
	wait_ready "$port" "$TIMEOUT" "$pid" "$stem.log" || exit 1
	base_url "$port"
}

cmd_restart() {
	local args=("$@") name=main profile=""
	while (($#)); do
		case "$1" in
			--name) name="$2"; shift 2 ;;
			--name=*) name="${1#*=}"; shift ;;
			--profile) profile="$2"; shift 2 ;;
			--profile=*) profile="${1#*=}"; shift ;;
			*) shift ;;
		esac
	done
	if [[ -n "$profile" && "$profile" != full ]]; then cmd_stop --profile "$profile"; else cmd_stop --name "$name"; fi
	cmd_start "${args[@]}"
}

usage() {
	sed -n '2,40p' "$0" | sed 's/^# \{0,1\}//' >&2
}

main() {
	local cmd="${1:-}"
	[[ $# -gt 0 ]] && shift
	case "$cmd" in
		build) cmd_build "$@" ;;
		start) cmd_start "$@" ;;
		start-all) cmd_start_all "$@" ;;
		stop) cmd_stop "$@" ;;
		stop-all) cmd_stop_all "$@" ;;
		restart) cmd_restart "$@" ;;
		status) cmd_status "$@" ;;
		status-all) cmd_status_all "$@" ;;
		wait) cmd_wait "$@" ;;
		-h | --help | help) usage ;;
		*) usage; exit 2 ;;
	esac
}

main "$@"
