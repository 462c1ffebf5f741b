#!/usr/bin/env bash
# bench-ab.sh compares the push throughput of two versions of evx on this
# machine, alternating them so that both see the same load:
#
#   scripts/bench-ab.sh REV_A [REV_B]
#
# REV_A and REV_B are git revisions; without REV_B, B is the working tree.
# For each of BENCH_AB_N rounds it starts fresh DE and FR gateway processes
# of version A on MinIO storage (scripts/minio.sh; one dev-env set-up and
# one bucket per country, shared by both versions), pushes one random file
# of BENCH_SIZE_MIB MiB with A's `evx push` until FR has receipted it, stops
# the gateways, does the same with B, and runs the age | PutObject baseline
# of scripts/bench.sh once. It prints each push's wall time and the CPU
# seconds of the push process, of each gateway and of MinIO, then the
# medians and the ratio of B's median throughput to A's.
#
# Environment: BENCH_AB_N rounds (default 4), BENCH_SIZE_MIB (default
# 1024), BENCH_DIR for the work directory (default $TMPDIR or /tmp).
set -euo pipefail

if (($# < 1 || $# > 2)); then
	echo "usage: scripts/bench-ab.sh REV_A [REV_B]" >&2
	exit 2
fi
n=${BENCH_AB_N:-4}
size_mib=${BENCH_SIZE_MIB:-1024}
for v in n size_mib; do
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

# build REV OUT builds evx at git revision REV ("" for the working tree).
build() {
	if [[ -z $1 ]]; then
		(cd "$root" && go build -trimpath -o "$2" ./cmd/evx)
		return
	fi
	git -C "$root" worktree add -q --detach "$work/tree" "$1"
	(cd "$work/tree" && go build -trimpath -o "$2" ./cmd/evx)
	git -C "$root" worktree remove --force "$work/tree"
}
log "building A ($1) and B (${2:-working tree})"
build "$1" "$work/evx-A"
build "${2:-}" "$work/evx-B"
(cd "$root" && go test -c -o "$work/storage.test" ./storage)

minio_env=$("$root/scripts/minio.sh" start)
eval "$minio_env"
minio_dir=$EVX_MINIO_DIR
AWS_ACCESS_KEY_ID=$EVX_TEST_S3_ACCESS_KEY AWS_SECRET_ACCESS_KEY=$EVX_TEST_S3_SECRET_KEY \
	"$work/evx-B" dev-env --dir "$work/env" --s3 "http://$EVX_TEST_S3_ENDPOINT" >/dev/null
head -c $((size_mib * 1048576)) /dev/urandom >"$work/data"
hz=$(getconf CLK_TCK)
secs() { awk -v t="$1" -v hz="$hz" 'BEGIN { printf "%.2f", t / hz }'; }

# push V starts version V's gateways, pushes the file, stops the gateways
# and writes "V wall-ms push-cpu DE-cpu FR-cpu MinIO-cpu" to $work/result.
# It runs in this shell, not a subshell, so that a failure's exit stops
# the gateways it started.
push() {
	local v=$1 de0 fr0 m0 start end
	start_gateway_pair "$work/evx-$v" "$work/env" "$work" ""
	de0=$(cpu_ticks "${gateway_pids[0]}") fr0=$(cpu_ticks "${gateway_pids[1]}") m0=$(cpu_ticks "$EVX_MINIO_PID")
	start=$(date +%s%N)
	if ! /usr/bin/time -f '%U %S' -o "$work/push.time" "$work/evx-$v" push --profile "$work/env/DE/forensics/profile.yaml" \
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

printf '%-9s %9s %9s %7s %7s %7s\n' "" "wall ms" "push CPU" "DE CPU" "FR CPU" "MinIO"
a_ms=() b_ms=() base_ms=()
for round in $(seq "$n"); do
	for v in A B; do
		push "$v"
		read -r _ ms p de fr m <"$work/result"
		printf '%-9s %9s %9s %7s %7s %7s\n' "$v $round" "$ms" "$p" "$de" "$fr" "$m"
		if [[ $v == A ]]; then a_ms+=("$ms"); else b_ms+=("$ms"); fi
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
