#!/usr/bin/env bash
# bench.sh measures pushes between two evx gateways on loopback with MinIO
# storage, run as a user runs them, against what a user could script
# instead, in one run, and prints a table with medians and ratios.
#
#   push      `evx push` of one random file of BENCH_SIZE_MIB MiB from DE's
#             forensic unit to FR's prosecutor, timed from start to exit:
#             push seals, uploads to DE, which forwards the upload to FR
#             as it arrives, and ends with FR's receipt, that is, once the
#             bundle is in FR's inbox. Both gateways
#             are `evx gateway` processes storing in MinIO.
#   baseline  the same file encrypted with age to a post-quantum recipient
#             (as evx seals) and piped into one minio-go PutObject of
#             unknown size with evx's part size, to the same MinIO, in one
#             process (BenchmarkBaselineAgePutObject in storage).
#   quic      one quic-go stream over loopback UDP with the peer
#             transport's TLS and QUIC settings, 256 KiB writes as delivery
#             makes (BenchmarkQUICStream in transfer): the ceiling for the
#             gateway-to-gateway leg.
# The three alternate, BENCH_REPS times. Then, with fresh gateway processes
# for each size in BENCH_RSS_SIZES_MIB, one push and each gateway's peak
# RSS (VmHWM); and the latency of 64 KiB pushes, in process
# (BenchmarkPushLatency in gateway, warm connections, disk and S3) and as
# `evx push` processes.
#
# Environment:
#   BENCH_SIZE_MIB       size of the pushed file in MiB (default 1024)
#   BENCH_REPS           repetitions of the throughput trio (default 3)
#   BENCH_RSS_SIZES_MIB  sizes for the peak RSS pushes (default "1024 4096";
#                        empty skips them)
#   BENCH_LATENCY_N      64 KiB pushes in process per backend (default 200)
#   BENCH_LATENCY_PROCS  64 KiB `evx push` processes (default 20)
#   BENCH_DIR            where the work directory with the data goes
#                        (default $TMPDIR or /tmp); MinIO keeps its data in
#                        $TMPDIR or /tmp (scripts/minio.sh)
#
# MinIO comes from scripts/minio.sh (built once, cached). Everything this
# script starts is stopped and removed when it exits.
set -euo pipefail

size_mib=${BENCH_SIZE_MIB:-1024}
reps=${BENCH_REPS:-3}
rss_sizes=${BENCH_RSS_SIZES_MIB-1024 4096}
latency_n=${BENCH_LATENCY_N:-200}
latency_procs=${BENCH_LATENCY_PROCS:-20}

for v in size_mib reps latency_n latency_procs; do
	case ${!v} in '' | *[!0-9]* | 0) echo "bench.sh: $v must be a positive whole number, not '${!v}'" >&2; exit 2 ;; esac
done
for s in $rss_sizes; do
	case $s in *[!0-9]* | 0) echo "bench.sh: BENCH_RSS_SIZES_MIB holds '$s', not a positive whole number" >&2; exit 2 ;; esac
done

root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=scripts/benchlib.sh
. "$root/scripts/benchlib.sh"
parent=${BENCH_DIR:-${TMPDIR:-/tmp}}
# The largest file, its sealed copy and two stored copies in MinIO, plus
# the baselines' objects and slack.
largest=$size_mib
for s in $rss_sizes; do ((s > largest)) && largest=$s; done
need_kib=$(((largest * 4 + size_mib * (reps * 3 + 1)) * 1024 + 1024 * 1024))
avail_kib=$(df -Pk "$parent" | awk 'NR == 2 { print $4 }')
if ((avail_kib < need_kib)); then
	echo "bench.sh: $parent has $((avail_kib / 1024)) MiB free; this run needs $((need_kib / 1024)) MiB" >&2
	exit 1
fi

work=$(mktemp -d "$parent/evx-bench.XXXXXX")
gateway_pids=()
minio_dir=
cleanup() {
	stop_bench_processes
	rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { echo "bench.sh: $*" >&2; }
load() { uptime | sed 's/.*load average: //'; }

log "building evx and the benchmark binaries"
cd "$root"
go build -trimpath -o "$work/evx" ./cmd/evx
for pkg in storage transfer gateway; do
	go test -c -o "$work/$pkg.test" "./$pkg"
done
evx=$work/evx

log "starting MinIO"
minio_env=$("$root/scripts/minio.sh" start)
eval "$minio_env"
minio_dir=$EVX_MINIO_DIR
export EVX_TEST_S3_ENDPOINT EVX_TEST_S3_ACCESS_KEY EVX_TEST_S3_SECRET_KEY

AWS_ACCESS_KEY_ID=$EVX_TEST_S3_ACCESS_KEY AWS_SECRET_ACCESS_KEY=$EVX_TEST_S3_SECRET_KEY \
	"$evx" dev-env --dir "$work/env" --s3 "http://$EVX_TEST_S3_ENDPOINT" >/dev/null
profile=$work/env/DE/forensics/profile.yaml

# start_gateways starts DE and FR as processes, each logging to a new file,
# and waits until both serve.
starts=0
start_gateways() {
	starts=$((starts + 1))
	start_gateway_pair "$evx" "$work/env" "$work" "-$starts"
}

stop_gateways() {
	local pid
	for pid in "${gateway_pids[@]}"; do
		if ! kill "$pid" 2>/dev/null; then
			log "a gateway process ($pid) had already exited; logs in $work are removed at exit"
		fi
		wait "$pid" || true
	done
	gateway_pids=()
}

# gateway_logs shows the end of the running gateways' logs, for failures.
gateway_logs() {
	local id pid i=0
	for id in DE FR; do
		pid=${gateway_pids[i]:-}
		i=$((i + 1))
		if [[ -n $pid ]] && ! kill -0 "$pid" 2>/dev/null; then
			log "gateway $id (pid $pid) is no longer running"
		fi
		log "last lines of gateway $id's log:"
		tail -n 5 "$work/$id-$starts.log" | cut -c1-400 >&2
	done
}

# vmhwm PID prints the peak resident set size of a process in KiB.
vmhwm() { awk '/^VmHWM:/ { print $2 }' "/proc/$1/status"; }

hz=$(getconf CLK_TCK)

# push FILE pushes FILE from DE/forensics to FR/prosecutor, waiting for
# FR's receipt, and prints the wall time in nanoseconds. It leaves in
# $work/push.last: start and end (ns since the epoch), the bundle id, and
# the CPU seconds of the evx push process, of both gateways and of MinIO.
push() {
	local start end out gw0 gw1 m0 m1
	gw0=$(cpu_ticks "${gateway_pids[@]}")
	m0=$(cpu_ticks "$EVX_MINIO_PID")
	start=$(date +%s%N)
	out=$(/usr/bin/time -f '%U %S' -o "$work/push.time" "$evx" push --profile "$profile" --to FR/prosecutor \
		--purpose mutual-legal-assistance --legal-basis "EIO 2026/17" --wait 60m --json "$1" 2>"$work/push.err") || {
		log "evx push failed:"
		cat "$work/push.err" >&2
		gateway_logs
		exit 1
	}
	end=$(date +%s%N)
	gw1=$(cpu_ticks "${gateway_pids[@]}")
	m1=$(cpu_ticks "$EVX_MINIO_PID")
	if ! grep -q '"state": "delivered"' <<<"$out"; then
		log "evx push returned before delivery: $out"
		exit 1
	fi
	echo "$start $end $(sed -n 's/.*"bundle_id": "\([0-9a-f]*\)".*/\1/p' <<<"$out")" \
		"$(awk '{ print $1 + $2 }' "$work/push.time")" \
		"$(awk -v t=$((gw1 - gw0)) -v hz="$hz" 'BEGIN { print t / hz }')" \
		"$(awk -v t=$((m1 - m0)) -v hz="$hz" 'BEGIN { print t / hz }')" >"$work/push.last"
	echo $((end - start))
}

# phases prints, for the bundle of $work/push.last, the seconds from the
# start of evx push until FR has accepted DE's offer (resolving the
# recipient, sealing, and the offer), from then until DE has stored FR's
# receipt (upload and delivery, which overlap: DE forwards the upload as it
# arrives), and from then until evx push has exited, from the "forwarding
# bundle" and "bundle delivered" lines of DE's log. A push that DE stored
# before delivering (the peer could not take it at once) has no
# "forwarding bundle" line; its first phase ends at "bundle submitted".
phases() {
	local start end id offered delivered
	read -r start end id _ <"$work/push.last"
	ts() { grep "\"$1\"" "$work/DE-$starts.log" | grep "\"bundle\":\"$id\"" | sed -n 's/.*"ts":\([0-9.]*\).*/\1/p' | head -n 1; }
	offered=$(ts "forwarding bundle")
	[[ -n $offered ]] || offered=$(ts "bundle submitted")
	delivered=$(ts "bundle delivered")
	awk -v s="$start" -v e="$end" -v a="$offered" -v b="$delivered" \
		'BEGIN { printf "%.2f %.2f %.2f", a - s / 1e9, b - a, e / 1e9 - b }'
}

# gobench BINARY PATTERN UNIT [ENV...] runs one benchmark once and prints
# the value of its metric UNIT, then the CPU seconds of the benchmark
# process and of MinIO while it ran.
gobench() {
	local bin=$1 pattern=$2 unit=$3
	shift 3
	local out m0 m1
	m0=$(cpu_ticks "$EVX_MINIO_PID")
	out=$(env "$@" /usr/bin/time -f 'time %U %S' "$work/$bin.test" -test.run '^$' -test.bench "$pattern" -test.benchtime 1x 2>&1) || {
		log "$bin benchmark $pattern failed:"
		echo "$out" >&2
		exit 1
	}
	m1=$(cpu_ticks "$EVX_MINIO_PID")
	awk -v unit="$unit" '/^Benchmark/ { for (i = 2; i <= NF; i++) if ($i == unit) printf "%s ", $(i - 1) }' <<<"$out"
	awk '$1 == "time" { printf "%s ", $2 + $3 }' <<<"$out"
	awk -v t=$((m1 - m0)) -v hz="$hz" 'BEGIN { print t / hz }'
}

mbps() { awk -v b="$1" -v ns="$2" 'BEGIN { printf "%.1f", b / 1e6 / (ns / 1e9) }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

make_data() { head -c $(($1 * 1048576)) /dev/urandom >"$2"; }

load_start=$(load)
log "load average at start: $load_start"

# Throughput: push, baseline and raw QUIC, alternating.
data=$work/image-$size_mib.raw
make_data "$size_mib" "$data"
bytes=$((size_mib * 1048576))
start_gateways
push_mbps=() base_mbps=() quic_mbps=() push_cpu=() base_cpu=() seal_s=() deliver_s=() tail_s=()
for rep in $(seq "$reps"); do
	ns=$(push "$data")
	push_mbps+=("$(mbps "$bytes" "$ns")")
	read -r _ _ _ c_push c_gw c_minio <"$work/push.last"
	push_cpu+=("$(awk -v a="$c_push" -v b="$c_gw" -v c="$c_minio" 'BEGIN { printf "%.1f", a + b + c }')")
	read -r a b c <<<"$(phases)"
	seal_s+=("$a") deliver_s+=("$b") tail_s+=("$c")
	read -r mb c_bench c_minio <<<"$(gobench storage '^BenchmarkBaselineAgePutObject$' MB/s EVX_BENCH_FILE="$data")"
	base_mbps+=("$mb")
	base_cpu+=("$(awk -v a="$c_bench" -v b="$c_minio" 'BEGIN { printf "%.1f", a + b }')")
	read -r mb _ <<<"$(gobench transfer '^BenchmarkQUICStream$/^write=256KiB$' MB/s EVX_BENCH_SIZE_MIB="$size_mib")"
	quic_mbps+=("$mb")
	log "rep $rep: push ${push_mbps[-1]} MB/s (${push_cpu[-1]} CPU s; seal and offer $a s, upload and delivery $b s, answer $c s)," \
		"age|PutObject ${base_mbps[-1]} MB/s (${base_cpu[-1]} CPU s), quic ${quic_mbps[-1]} MB/s (load $(load))"
done
stop_gateways
rm -f "$data"

# Latency of small pushes: in process, then as processes.
log "64 KiB pushes in process, $latency_n per backend"
lat_out=$("$work/gateway.test" -test.run '^$' -test.bench '^BenchmarkPushLatency$' -test.benchtime "${latency_n}x" 2>&1) || {
	echo "$lat_out" >&2
	exit 1
}
lat_metric() { awk -v name="$1" -v unit="$2" '$1 ~ "^BenchmarkPushLatency/" name "(-[0-9]+)?$" { for (i = 2; i <= NF; i++) if ($i == unit) print $(i - 1) }' <<<"$lat_out"; }
small=$work/small.raw
head -c 65536 /dev/urandom >"$small"
start_gateways
push "$small" >/dev/null # warms MinIO and the directory cache
proc_ms=()
for _ in $(seq "$latency_procs"); do
	proc_ms+=("$(awk -v ns="$(push "$small")" 'BEGIN { printf "%.1f", ns / 1e6 }')")
done
stop_gateways
proc_p50=$(median "${proc_ms[@]}")
proc_p90=$(printf '%s\n' "${proc_ms[@]}" | sort -g | awk '{ v[NR] = $1 } END { i = int(0.9 * (NR - 1) + 0.5) + 1; print v[i] }')

# Peak RSS of each gateway process, fresh processes for each size.
rss_rows=()
for s in $rss_sizes; do
	log "peak RSS over a push of $s MiB"
	f=$work/image-rss-$s.raw
	make_data "$s" "$f"
	start_gateways
	de=${gateway_pids[0]} fr=${gateway_pids[1]}
	ns=$(push "$f")
	read -r a b c <<<"$(phases)"
	log "push of $s MiB: seal and offer $a s, upload and delivery $b s, answer $c s"
	rss_rows+=("$(printf '%-28s %10s %10s %10s' "push of $s MiB" "$(($(vmhwm "$de") / 1024))" "$(($(vmhwm "$fr") / 1024))" "$(mbps $((s * 1048576)) "$ns")")")
	stop_gateways
	rm -f "$f"
done
load_end=$(load)

push_med=$(median "${push_mbps[@]}")
base_med=$(median "${base_mbps[@]}")
quic_med=$(median "${quic_mbps[@]}")

echo
echo "evx scripts/bench.sh, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPUs, $(go env GOVERSION), $(git -C "$root" describe --always --dirty 2>/dev/null || echo unknown)"
echo "load average: $load_start at start, $load_end at end"
echo
echo "Throughput, $size_mib MiB, medians of $reps runs (MB/s = 10^6 bytes of the file per second;"
echo "CPU s = CPU seconds of every process involved, MinIO included)"
printf '%-42s %8s %7s %7s  %s\n' "" "MB/s" "ratio" "CPU s" "runs (MB/s)"
printf '%-42s %8s %7s %7s  %s\n' "evx push, until in FR's inbox (MinIO)" "$push_med" "$(ratio "$push_med" "$base_med")" "$(median "${push_cpu[@]}")" "${push_mbps[*]}"
printf '%-42s %8s %7s %7s  %s\n' "baseline: age | one PutObject (MinIO)" "$base_med" "1.00" "$(median "${base_cpu[@]}")" "${base_mbps[*]}"
printf '%-42s %8s %7s %7s  %s\n' "raw quic-go stream, evx settings" "$quic_med" "$(ratio "$quic_med" "$base_med")" "" "${quic_mbps[*]}"
echo "evx push phases (medians, s): seal and offer $(median "${seal_s[@]}"), upload and delivery $(median "${deliver_s[@]}"), answer to evx push $(median "${tail_s[@]}")"
echo
echo "Latency of a 64 KiB push until in FR's inbox (ms)"
printf '%-44s %10s %10s\n' "" "p50" "p90"
printf '%-44s %10s %10s\n' "in process, disk, $latency_n pushes" "$(lat_metric disk p50-ms)" "$(lat_metric disk p90-ms)"
printf '%-44s %10s %10s\n' "in process, MinIO, $latency_n pushes" "$(lat_metric S3 p50-ms)" "$(lat_metric S3 p90-ms)"
printf '%-44s %10s %10s\n' "evx push processes, MinIO, $latency_procs pushes" "$proc_p50" "$proc_p90"
if ((${#rss_rows[@]} > 0)); then
	echo
	echo "Peak RSS (VmHWM) of each gateway process over one push, fresh processes"
	printf '%-28s %10s %10s %10s\n' "" "DE MiB" "FR MiB" "MB/s"
	printf '%s\n' "${rss_rows[@]}"
fi
