#!/usr/bin/env bash
# bench-seal.sh seals and opens the same data with the evx binary and, in the
# same run, encrypts and decrypts it with the stock age CLI, alternating the
# two, and prints median throughputs, peak RSS and the ratio evx/age.
#
# Environment:
#   BENCH_SIZE_MIB  size of the evidence set in MiB (default 1024)
#   BENCH_REPS      repetitions of each command (default 5)
#   BENCH_DIR       where the temporary work directory goes (default $TMPDIR
#                   or /tmp); inputs and outputs live there, on that file
#                   system, and are removed at the end
#   BENCH_AGE_SYNC  1 (default) times age encryption with a sync of its
#                   output, as evx seal fsyncs the bundle; 0 times age alone
#
# The evidence set is one large random file plus 16 random files of 64 KiB.
# age is given the same bytes as one tar file, made once and not timed: the
# baseline is encryption alone, with no archiving or hashing.
#
# evx seal fsyncs the bundle before linking it into place, and age does not,
# so by default the age encryption is timed together with `sync FILE` on its
# output: both then end with their output on disk. Neither open nor age -d
# syncs.
# Before every timed command the script runs a plain `sync`, untimed, so no
# command pays for writing back another's output.
set -euo pipefail

size_mib=${BENCH_SIZE_MIB:-1024}
reps=${BENCH_REPS:-5}
age_sync=${BENCH_AGE_SYNC:-1}
age_version=v1.3.2
small_files=16
small_kib=64

case $size_mib in '' | *[!0-9]*) echo "BENCH_SIZE_MIB must be a whole number of MiB" >&2; exit 2 ;; esac
case $reps in '' | *[!0-9]* | 0) echo "BENCH_REPS must be a positive whole number" >&2; exit 2 ;; esac
case $age_sync in 0 | 1) ;; *) echo "BENCH_AGE_SYNC must be 0 or 1" >&2; exit 2 ;; esac
if (( size_mib * 1024 <= small_files * small_kib )); then
	echo "BENCH_SIZE_MIB must be over $(( small_files * small_kib / 1024 ))" >&2
	exit 2
fi
if [[ ! -x /usr/bin/time ]]; then
	echo "bench-seal.sh needs GNU time at /usr/bin/time (Debian package: time)" >&2
	exit 2
fi

root=$(cd "$(dirname "$0")/.." && pwd)
cache_bin=$HOME/.cache/evx/bin
age=$cache_bin/age
if [[ ! -x $age ]] || [[ $("$age" --version) != "$age_version" ]]; then
	echo "installing age $age_version into $cache_bin" >&2
	GOBIN=$cache_bin go install "filippo.io/age/cmd/age@$age_version"
fi

parent=${BENCH_DIR:-${TMPDIR:-/tmp}}
# Data, the tar copy for age, one bundle, one age file and one extracted copy
# coexist: five times the size, plus slack.
need_kib=$(( size_mib * 1024 * 5 + 1024 * 1024 ))
avail_kib=$(df -Pk "$parent" | awk 'NR == 2 { print $4 }')
if (( avail_kib < need_kib )); then
	echo "$parent has $(( avail_kib / 1024 )) MiB free; this run needs $(( need_kib / 1024 )) MiB" >&2
	exit 1
fi
work=$(mktemp -d "$parent/evx-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT

echo "building evx" >&2
(cd "$root" && go build -trimpath -o "$work/evx" ./cmd/evx)
evx=$work/evx

echo "writing $size_mib MiB of random data" >&2
mkdir "$work/evidence"
large_bytes=$(( size_mib * 1048576 - small_files * small_kib * 1024 ))
head -c "$large_bytes" /dev/urandom >"$work/evidence/disk.img"
for i in $(seq -w 1 "$small_files"); do
	head -c $(( small_kib * 1024 )) /dev/urandom >"$work/evidence/log-$i.txt"
done
tar -C "$work" -cf "$work/evidence.tar" evidence
total_bytes=$(( size_mib * 1048576 ))

"$evx" keygen -o "$work/unit.key" --unit XX/bench 2>/dev/null
"$evx" keygen -y "$work/unit.key" >"$work/unit.pub"
recipient=$(sed -n 's/^age-recipient: //p' "$work/unit.pub")

# run NAME CMD... times one command: wall time in nanoseconds, and GNU time's
# peak RSS (KiB) and CPU seconds. One line per run goes to $work/NAME.
run() {
	local name=$1
	shift
	sync
	local t0 t1
	t0=$(date +%s%N)
	if ! /usr/bin/time -o "$work/time.out" -f '%M %U %S' "$@" >/dev/null 2>"$work/stderr"; then
		echo "$name failed:" >&2
		cat "$work/stderr" >&2
		exit 1
	fi
	t1=$(date +%s%N)
	read -r rss user sys <"$work/time.out"
	echo "$(( t1 - t0 )) $rss $user $sys" >>"$work/$name"
}

seal() {
	rm -f "$work/bundle.evx"
	run evx-seal "$evx" seal --key "$work/unit.key" --to "@$work/unit.pub" \
		--purpose criminal-investigation --legal-basis BENCH-1 -o "$work/bundle.evx" "$work/evidence"
}
encrypt() {
	rm -f "$work/evidence.tar.age"
	if (( age_sync )); then
		run age-encrypt sh -c '"$1" -r "$2" -o "$3" "$4" && sync "$3"' sh \
			"$age" "$recipient" "$work/evidence.tar.age" "$work/evidence.tar"
	else
		run age-encrypt "$age" -r "$recipient" -o "$work/evidence.tar.age" "$work/evidence.tar"
	fi
}
open_bundle() {
	rm -rf "$work/opened"
	run evx-open "$evx" open "$work/bundle.evx" --key "$work/unit.key" -o "$work/opened"
	rm -rf "$work/opened"
}
decrypt() {
	rm -f "$work/decrypted.tar"
	run age-decrypt "$age" -d -i "$work/unit.key" -o "$work/decrypted.tar" "$work/evidence.tar.age"
	rm -f "$work/decrypted.tar"
}

# Check once, untimed, that both tools round-trip the data.
seal
open_bundle_check() {
	"$evx" open "$work/bundle.evx" --key "$work/unit.key" -o "$work/opened" >/dev/null
	cmp "$work/evidence/disk.img" "$work/opened/evidence/disk.img"
	rm -rf "$work/opened"
}
open_bundle_check
encrypt
"$age" -d -i "$work/unit.key" "$work/evidence.tar.age" | cmp - "$work/evidence.tar"
rm -f "$work"/evx-* "$work"/age-*

load_start=$(cut -d' ' -f1-3 /proc/loadavg)
for (( r = 1; r <= reps; r++ )); do
	echo "repetition $r of $reps" >&2
	# Alternate which tool goes first, so that drift in the machine's load
	# does not favour one of them.
	if (( r % 2 )); then
		seal; encrypt; open_bundle; decrypt
	else
		encrypt; seal; decrypt; open_bundle
	fi
done
load_end=$(cut -d' ' -f1-3 /proc/loadavg)

# median FILE: the median wall time in ns (lower median for even counts).
median() { cut -d' ' -f1 "$1" | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
# max_rss FILE: the largest peak RSS in KiB.
max_rss() { cut -d' ' -f2 "$1" | sort -n | tail -1; }
# median_cpu FILE: the median user+sys CPU seconds.
median_cpu() { awk '{ print $3 + $4 }' "$1" | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

echo
echo "evx bench-seal: $size_mib MiB (1 file of $(( large_bytes / 1048576 )) MiB + $small_files of $small_kib KiB), repetitions: $reps"
echo "$(go env GOVERSION), $(nproc) CPUs, $(uname -m); work dir on $(df -PT "$work" | awk 'NR == 2 { print $2 }')"
echo "load average before: $load_start, after: $load_end"
if (( age_sync )); then
	echo "age-encrypt includes sync of its output (evx seal fsyncs the bundle)"
else
	echo "age-encrypt without sync (evx seal still fsyncs the bundle)"
fi
echo
printf '%-12s %10s %10s %12s %10s   %s\n' command "median s" "MB/s" "peak RSS" "CPU s" "all runs (s)"
for name in evx-seal age-encrypt evx-open age-decrypt; do
	m=$(median "$work/$name")
	runs=$(awk '{ printf "%.2f ", $1 / 1e9 }' "$work/$name")
	printf '%-12s %10.2f %10.0f %9.1f MiB %10.2f   %s\n' "$name" \
		"$(awk -v m="$m" 'BEGIN { print m / 1e9 }')" \
		"$(awk -v m="$m" -v b="$total_bytes" 'BEGIN { print b / (m / 1e9) / 1e6 }')" \
		"$(awk -v k="$(max_rss "$work/$name")" 'BEGIN { print k / 1024 }')" \
		"$(median_cpu "$work/$name")" "$runs"
done
echo
ratio() { awk -v e="$(median "$work/$1")" -v a="$(median "$work/$2")" 'BEGIN { printf "%.2f", a / e }'; }
echo "seal/encrypt throughput ratio (evx/age): $(ratio evx-seal age-encrypt)"
echo "open/decrypt throughput ratio (evx/age): $(ratio evx-open age-decrypt)"
