#!/usr/bin/env bash
# bench-ab.sh compares the push throughput of two versions of evx on this
# machine, alternating them so that both see the same load:
#
#   scripts/bench-ab.sh REV_A [REV_B]
#
# REV_A and REV_B are git revisions; without REV_B, B is the working tree.
# For each of BENCH_AB_N rounds it starts fresh DE and FR gateway processes
# of version A on MinIO storage (scripts/minio.sh; each version runs the
# dev-env set-up it writes itself, with its own bucket per country), pushes
# one random file of BENCH_SIZE_MIB MiB with A's `evx push` until FR has
# receipted it, stops
# the gateways, does the same with B, and runs the age | PutObject baseline
# of scripts/bench.sh once. In each round it also runs each version's
# BenchmarkPushLatency (gateway; 64 KiB pushes in process, disk and MinIO,
# BENCH_AB_LATENCY_N of each). It prints each push's wall time and the CPU
# seconds of the push process, of each gateway and of MinIO, each
# version's p50 latencies, then the medians and the ratios of B to A.
#
# Environment: BENCH_AB_N rounds (default 4), BENCH_SIZE_MIB (default
# 1024), BENCH_AB_LATENCY_N (default 100), BENCH_DIR for the work directory
# (default $TMPDIR or /tmp).
set -euo pipefail

if (($# < 1 || $# > 2)); then
	echo "usage: scripts/bench-ab.sh REV_A [REV_B]" >&2
	exit 2
fi
n=${BENCH_AB_N:-4}
size_mib=${BENCH_SIZE_MIB:-1024}
latency_n=${BENCH_AB_LATENCY_N:-100}
for v in n size_mib latency_n; do
	case ${!v} in '' | *[!0-9]* | 0) echo "bench-ab.sh: $v must be a positive whole number, not '${!v}'" >&2; exit 2 ;; esac
done

root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=scripts/benchlib.sh
. "$root/scripts/benchlib.sh"
work=$(mktemp -d "${BENCH_DIR:-${TMPDIR:-/tmp}}/evx-ab.XXXXXX")
gateway_pids=()
minio_dir=
cleanup() {
	stop_bench_processes
	git -C "$root" worktree remove --force "$work/tree" 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
log() { echo "bench-ab.sh: $*" >&2; }

# build REV V builds evx and the gateway's test binary at git revision REV
# ("" for the working tree) as $work/evx-V and $work/gateway-V.test.
build() {
	local dir=$root
	if [[ -n $1 ]]; then
		git -C "$root" worktree add -q --detach "$work/tree" "$1"
		dir=$work/tree
	fi
	(cd "$dir" && go build -trimpath -o "$work/evx-$2" ./cmd/evx && go test -c -o "$work/gateway-$2.test" ./gateway)
	if [[ -n $1 ]]; then
		git -C "$root" worktree remove --force "$work/tree"
	fi
}
log "building A ($1) and B (${2:-working tree})"
build "$1" A
build "${2:-}" B
(cd "$root" && go test -c -o "$work/storage.test" ./storage)

minio_env=$("$root/scripts/minio.sh" start)
eval "$minio_env"
minio_dir=$EVX_MINIO_DIR
# Each version writes its own set-up, since a newer configuration may have
# fields an older version refuses; A's buckets get other names, so that
# neither version reads what the other stored.
for v in A B; do
	AWS_ACCESS_KEY_ID=$EVX_TEST_S3_ACCESS_KEY AWS_SECRET_ACCESS_KEY=$EVX_TEST_S3_SECRET_KEY \
		"$work/evx-$v" dev-env --dir "$work/env-$v" --s3 "http://$EVX_TEST_S3_ENDPOINT" >/dev/null
done
sed -i 's/^\(    bucket: \)evx-/\1evx-a-/' "$work"/env-A/*/gateway.yaml
head -c $((size_mib * 1048576)) /dev/urandom >"$work/data"
hz=$(getconf CLK_TCK)
secs() { awk -v t="$1" -v hz="$hz" 'BEGIN { printf "%.2f", t / hz }'; }

# push V starts version V's gateways, pushes the file, stops the gateways
# and writes "V wall-ms push-cpu DE-cpu FR-cpu MinIO-cpu" to $work/result.
# It runs in this shell, not a subshell, so that a failure's exit stops
# the gateways it started.
push() {
	local v=$1 de0 fr0 m0 start end
	start_gateway_pair "$work/evx-$v" "$work/env-$v" "$work" ""
	de0=$(cpu_ticks "${gateway_pids[0]}") fr0=$(cpu_ticks "${gateway_pids[1]}") m0=$(cpu_ticks "$EVX_MINIO_PID")
	start=$(date +%s%N)
	if ! /usr/bin/time -f '%U %S' -o "$work/push.time" "$work/evx-$v" push --profile "$work/env-$v/DE/forensics/profile.yaml" \
		--to FR/prosecutor --purpose mutual-legal-assistance --legal-basis "EIO 2026/17" --wait 60m \
		"$work/data" >/dev/null 2>"$work/push.err"; then
		log "push of $v failed:"
		cat "$work/push.err" >&2
		exit 1
	fi
	end=$(date +%s%N)
	echo "$v $(((end - start) / 1000000)) $(awk '{ printf "%.2f", $1 + $2 }' "$work/push.time")" \
		"$(secs $(($(cpu_ticks "${gateway_pids[0]}") - de0))) $(secs $(($(cpu_ticks "${gateway_pids[1]}") - fr0)))" \
		"$(secs $(($(cpu_ticks "$EVX_MINIO_PID") - m0)))" >"$work/result"
	kill "${gateway_pids[@]}"
	wait "${gateway_pids[@]}" 2>/dev/null || true
	gateway_pids=()
}

# latency V prints the p50 in ms of version V's 64 KiB pushes in process,
# on disk and on MinIO (the MinIO of this script, through the EVX_TEST_S3_*
# variables).
latency() {
	local out
	out=$("$work/gateway-$1.test" -test.run '^$' -test.bench '^BenchmarkPushLatency$' -test.benchtime "${latency_n}x" 2>&1) || {
		log "BenchmarkPushLatency of $1 failed:"
		echo "$out" >&2
		exit 1
	}
	for be in disk S3; do
		awk -v name="$be" '$1 ~ "^BenchmarkPushLatency/" name "(-[0-9]+)?$" { for (i = 2; i <= NF; i++) if ($i == "p50-ms") printf "%s ", $(i - 1) }' <<<"$out"
	done
}

printf '%-9s %9s %9s %7s %7s %7s %9s %9s\n' "" "wall ms" "push CPU" "DE CPU" "FR CPU" "MinIO" "p50 disk" "p50 MinIO"
a_ms=() b_ms=() base_ms=() a_disk=() b_disk=() a_s3=() b_s3=()
for round in $(seq "$n"); do
	for v in A B; do
		push "$v"
		read -r _ ms p de fr m <"$work/result"
		read -r ld ls <<<"$(latency "$v")"
		printf '%-9s %9s %9s %7s %7s %7s %9s %9s\n' "$v $round" "$ms" "$p" "$de" "$fr" "$m" "$ld" "$ls"
		if [[ $v == A ]]; then
			a_ms+=("$ms") a_disk+=("$ld") a_s3+=("$ls")
		else
			b_ms+=("$ms") b_disk+=("$ld") b_s3+=("$ls")
		fi
	done
	ms=$(EVX_BENCH_FILE="$work/data" "$work/storage.test" -test.run '^$' -test.bench '^BenchmarkBaselineAgePutObject$' \
		-test.benchtime 1x 2>&1 | awk '/^BenchmarkBaselineAgePutObject/ { printf "%d", $3 / 1e6 }')
	printf '%-9s %9s\n' "baseline" "$ms"
	base_ms+=("$ms")
done
a=$(median "${a_ms[@]}") b=$(median "${b_ms[@]}") base=$(median "${base_ms[@]}")
echo
echo "medians of $n, $size_mib MiB: A $a ms, B $b ms, age | PutObject $base ms"
awk -v a="$a" -v b="$b" -v base="$base" 'BEGIN {
	printf "throughput B/A %.2f; against the baseline: A %.2f, B %.2f\n", a / b, base / a, base / b }'
ad=$(median "${a_disk[@]}") bd=$(median "${b_disk[@]}") as=$(median "${a_s3[@]}") bs=$(median "${b_s3[@]}")
echo "64 KiB push p50, median of $n runs of $latency_n: disk A $ad ms, B $bd ms; MinIO A $as ms, B $bs ms"
awk -v ad="$ad" -v bd="$bd" -v as="$as" -v bs="$bs" 'BEGIN { printf "latency B/A: disk %.2f, MinIO %.2f\n", bd / ad, bs / as }'
