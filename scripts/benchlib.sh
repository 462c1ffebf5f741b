# benchlib.sh holds the helpers that bench.sh and bench-ab.sh share; they
# source it. The functions use the scripts' own log (a message to stderr),
# root (the repository), gateway_pids and minio_dir.

# start_gateway_pair EVX ENV_DIR LOG_DIR TAG starts the DE and FR gateways
# of the dev-env set-up in ENV_DIR with the binary EVX, each logging to
# LOG_DIR/<ID>TAG.log, puts their process ids in gateway_pids, and waits
# until both serve.
start_gateway_pair() {
	local evx=$1 env_dir=$2 log_dir=$3 tag=$4 id
	gateway_pids=()
	for id in DE FR; do
		"$evx" gateway --config "$env_dir/$id/gateway.yaml" 2>"$log_dir/$id$tag.log" &
		gateway_pids+=($!)
	done
	for id in DE FR; do
		for _ in $(seq 300); do
			grep -q '"gateway running"' "$log_dir/$id$tag.log" && continue 2
			sleep 0.1
		done
		log "gateway $id did not start; its log:"
		tail -n 20 "$log_dir/$id$tag.log" >&2
		exit 1
	done
}

# stop_bench_processes stops the gateways in gateway_pids and the MinIO
# server of minio_dir, if any: for the scripts' exit traps.
stop_bench_processes() {
	local pid
	for pid in "${gateway_pids[@]}"; do
		kill "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	done
	gateway_pids=()
	if [[ -n $minio_dir ]]; then
		"$root/scripts/minio.sh" stop "$minio_dir" || true
		minio_dir=
	fi
}

# cpu_ticks PID... prints the CPU time (user and system) the processes have
# used so far, in clock ticks.
cpu_ticks() {
	local pid total=0 t
	for pid in "$@"; do
		# Fields 14 and 15 after the command, which may hold spaces.
		t=$(sed 's/.*) //' "/proc/$pid/stat" | awk '{ print $12 + $13 }')
		total=$((total + t))
	done
	echo "$total"
}

# median prints the median of its arguments.
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
