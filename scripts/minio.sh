#!/usr/bin/env bash
# A MinIO server for evx's S3 tests and benchmarks, on loopback only.
#
#   scripts/minio.sh build        build the pinned MinIO once (cached outside the repo)
#   scripts/minio.sh path         build if needed, print the binary's path
#   eval "$(scripts/minio.sh start)"
#                                 start a server with a new data directory and
#                                 credentials; prints export lines for
#                                 EVX_TEST_S3_ENDPOINT, EVX_TEST_S3_ACCESS_KEY,
#                                 EVX_TEST_S3_SECRET_KEY, EVX_MINIO_PID, EVX_MINIO_DIR
#   scripts/minio.sh stop [DIR]   stop the server started in DIR (default
#                                 $EVX_MINIO_DIR) and remove DIR
#
# MinIO's community edition is published as source only, so it is built from
# its Go module at a pinned version. The binary is cached in
# ${EVX_CACHE_DIR:-$HOME/.cache/evx}/minio/VERSION/minio; the first build takes
# several minutes.
set -euo pipefail

MINIO_MODULE=github.com/minio/minio
MINIO_VERSION=v0.0.0-20260212201848-7aac2a2c5b7c
CACHE_DIR=${EVX_CACHE_DIR:-$HOME/.cache/evx}/minio/$MINIO_VERSION
BIN=$CACHE_DIR/minio

die() {
	echo "minio.sh: $*" >&2
	exit 1
}

# show_log prints the end of a log file to stderr, for failures.
show_log() {
	if [[ -s $1 ]]; then
		echo "minio.sh: last lines of $1:" >&2
		tail -n 40 "$1" | sed 's/^/    /' >&2
	fi
}

build() {
	if [[ -x $BIN ]]; then
		return 0
	fi
	mkdir -p "$CACHE_DIR"
	local log=$CACHE_DIR/build.log
	# One build at a time: a second caller waits for the first, then finds
	# the binary.
	exec 9>"$CACHE_DIR/build.lock"
	if command -v flock >/dev/null; then
		flock 9
	fi
	if [[ -x $BIN ]]; then
		exec 9>&-
		return 0
	fi
	echo "minio.sh: building $MINIO_MODULE@$MINIO_VERSION (several minutes, log in $log)" >&2
	# Built into a scratch directory and moved into place, so that an
	# interrupted build never leaves a binary that looks complete.
	local gobin
	gobin=$(mktemp -d "$CACHE_DIR/build.XXXXXX")
	if ! GOBIN=$gobin GOFLAGS= go install "$MINIO_MODULE@$MINIO_VERSION" >"$log" 2>&1; then
		rm -rf "$gobin"
		show_log "$log"
		die "building MinIO failed"
	fi
	mv "$gobin/minio" "$BIN"
	rm -rf "$gobin"
	exec 9>&-
	echo "minio.sh: built $BIN" >&2
}

# port_in_use reports whether something accepts connections on a loopback port.
port_in_use() {
	(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# free_port prints a loopback port that nothing listens on (a race with other
# processes remains, which start handles by retrying).
free_port() {
	local port
	for _ in $(seq 100); do
		port=$((20000 + RANDOM % 40000))
		if ! port_in_use "$port"; then
			echo "$port"
			return 0
		fi
	done
	die "no free loopback port found"
}

# http_status prints the HTTP status code of GET path on a loopback port.
http_status() {
	local port=$1 path=$2 line
	exec 3<>"/dev/tcp/127.0.0.1/$port" || return 1
	printf 'GET %s HTTP/1.1\r\nHost: 127.0.0.1:%s\r\nConnection: close\r\n\r\n' "$path" "$port" >&3
	IFS= read -r -t 5 line <&3 || line=
	exec 3<&- 3>&-
	line=${line%$'\r'}
	echo "${line#HTTP/1.1 }" | cut -d' ' -f1
}

random_hex() {
	od -An -tx1 -N"$1" /dev/urandom | tr -d ' \n'
}

start() {
	build
	local dir
	dir=$(mktemp -d "${TMPDIR:-/tmp}/evx-minio.XXXXXX")
	local log=$dir/minio.log
	pid=
	started=
	# Whatever fails from here on, the server is stopped and its directory
	# removed.
	trap 'if [[ -z $started ]]; then [[ -z $pid ]] || kill "$pid" 2>/dev/null || true; show_log "'"$log"'"; rm -rf "'"$dir"'"; fi' EXIT
	local user password
	user=evx$(random_hex 6)
	password=$(random_hex 20)
	mkdir "$dir/data"

	local port console attempt ready
	for attempt in 1 2 3 4 5; do
		port=$(free_port)
		console=$(free_port)
		[[ $port != "$console" ]] || continue
		# The server keeps no descriptor of ours but its log, so that
		# $(scripts/minio.sh start) returns at once and no caller's pipe is
		# held open while it runs.
		(
			for fd in $(ls /proc/$BASHPID/fd); do
				if ((fd > 2)); then eval "exec $fd>&-"; fi
			done
			exec env MINIO_ROOT_USER="$user" MINIO_ROOT_PASSWORD="$password" \
				MINIO_BROWSER=off MINIO_UPDATE=off MINIO_CI_CD=on \
				"$BIN" server --quiet --address "127.0.0.1:$port" \
				--console-address "127.0.0.1:$console" "$dir/data"
		) </dev/null >"$log" 2>&1 &
		pid=$!
		echo "$pid" >"$dir/minio.pid"
		ready=
		for _ in $(seq 300); do
			kill -0 "$pid" 2>/dev/null || break
			if [[ $(http_status "$port" /minio/health/live 2>/dev/null || true) == 200 ]]; then
				ready=1
				break
			fi
			sleep 0.1
		done
		[[ -z $ready ]] || break
		if kill -0 "$pid" 2>/dev/null; then
			die "MinIO did not become ready in 30 s"
		fi
		pid=
		grep -qi 'address already in use' "$log" || die "MinIO exited at start"
		echo "minio.sh: port $port or $console was taken meanwhile, retrying (attempt $attempt)" >&2
	done
	[[ -n $ready ]] || die "could not start MinIO"
	cat >"$dir/env" <<-EOF
		export EVX_TEST_S3_ENDPOINT=127.0.0.1:$port
		export EVX_TEST_S3_ACCESS_KEY=$user
		export EVX_TEST_S3_SECRET_KEY=$password
		export EVX_MINIO_PID=$pid
		export EVX_MINIO_DIR=$dir
	EOF
	cat "$dir/env"
	started=1
	echo "minio.sh: MinIO running at 127.0.0.1:$port (pid $pid, log $log)" >&2
}

stop() {
	local dir=${1:-${EVX_MINIO_DIR:-}}
	[[ -n $dir ]] || die "stop: no directory given and EVX_MINIO_DIR is not set"
	[[ -f $dir/minio.pid ]] || die "stop: $dir/minio.pid not found: not a directory made by minio.sh start"
	local pid
	pid=$(<"$dir/minio.pid")
	[[ $pid =~ ^[0-9]+$ ]] || die "stop: $dir/minio.pid holds no pid"
	# Only signal the process if it is still our server: the pid may have
	# been reused since.
	if kill -0 "$pid" 2>/dev/null && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$dir/data"; then
		kill "$pid"
		for _ in $(seq 100); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		if kill -0 "$pid" 2>/dev/null; then
			echo "minio.sh: MinIO (pid $pid) did not stop in 10 s, killing it" >&2
			kill -KILL "$pid" 2>/dev/null || true
		fi
	fi
	rm -rf "$dir"
}

case ${1:-} in
build) build ;;
path)
	build
	echo "$BIN"
	;;
start) start ;;
stop)
	shift
	stop "$@"
	;;
*)
	echo "usage: scripts/minio.sh build | path | start | stop [DIR]" >&2
	exit 2
	;;
esac
