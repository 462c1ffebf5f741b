#!/usr/bin/env bash
# Runs every check of the project: formatting, go vet, staticcheck, the tests
# with the race detector, and short fuzz runs of every fuzz target. It first
# installs what the tests need, outside the repository and only when missing:
# the stock age CLI (for the interoperability tests), staticcheck, unzip and
# a MinIO server (for the S3 backend and end-to-end tests).
#
# Usage: scripts/test.sh          (from any directory)
# Environment: FUZZTIME (default 5s) is the duration of each fuzz run.
# With CI set, tests that need age, unzip or MinIO fail instead of skipping.
set -euo pipefail

AGE_VERSION=v1.3.2
STATICCHECK_VERSION=v0.8.2
FUZZTIME=${FUZZTIME:-5s}

cd "$(dirname "${BASH_SOURCE[0]}")/.."

section() { printf '\n==> %s\n' "$*"; }

BIN="$HOME/.cache/evx/bin"
mkdir -p "$BIN"
export PATH="$BIN:$PATH"

section "tools: age $AGE_VERSION, staticcheck $STATICCHECK_VERSION, unzip"
if [[ ! -x "$BIN/age" ]] || [[ "$("$BIN/age" --version)" != "$AGE_VERSION" ]]; then
	GOBIN="$BIN" go install "filippo.io/age/cmd/age@$AGE_VERSION"
fi
if [[ ! -x "$BIN/staticcheck" ]] || [[ "$("$BIN/staticcheck" -version)" != *"(${STATICCHECK_VERSION#v})" ]]; then
	GOBIN="$BIN" go install "honnef.co/go/tools/cmd/staticcheck@$STATICCHECK_VERSION"
fi
if ! command -v unzip >/dev/null; then
	sudo=()
	if [[ "$(id -u)" -ne 0 ]]; then sudo=(sudo); fi
	export DEBIAN_FRONTEND=noninteractive
	# The package lists are refreshed only if the first attempt fails.
	"${sudo[@]}" apt-get install -y -qq unzip ||
		{ "${sudo[@]}" apt-get update -qq && "${sudo[@]}" apt-get install -y -qq unzip; }
fi
go version
echo "age $(age --version)"
staticcheck -version
unzip -v | sed -n 1p

section "MinIO (S3 backend tests)"
# Built once from the Go module at a pinned version and cached outside the
# repository (the first build takes several minutes); started on loopback
# with a fresh data directory, and stopped when this script exits.
eval "$(scripts/minio.sh start)"
trap 'scripts/minio.sh stop "$EVX_MINIO_DIR" >/dev/null 2>&1 || true' EXIT
echo "MinIO at $EVX_TEST_S3_ENDPOINT"

section "gofmt"
unformatted=$(gofmt -l .)
if [[ -n "$unformatted" ]]; then
	echo "these files are not gofmt-formatted (run gofmt -w on them):" >&2
	echo "$unformatted" >&2
	exit 1
fi
echo ok

section "go vet"
go vet ./...
echo ok

section "staticcheck"
staticcheck ./...
echo ok

section "go test -race"
go test -race -count=1 ./...

section "fuzz ($FUZZTIME per target)"
# Every "func FuzzX(" in a test file is a target, so new ones join in.
found=0
while IFS=: read -r file line; do
	name=${line#func }
	name=${name%%(*}
	pkg=./$(dirname "${file#./}")
	echo "--- $name in $pkg"
	# Short minimisation keeps a short run fuzzing rather than shrinking.
	fuzz() { go test -run '^$' -fuzz "^$name\$" -fuzztime "$FUZZTIME" -fuzzminimizetime 2s "$pkg" 2>&1; }
	if ! out=$(fuzz); then
		echo "$out"
		# Go's fuzzing engine (before Go 1.27) can fail a run with a bare
		# "context deadline exceeded" as -fuzztime ends, under load, having
		# found nothing (golang/go#75804). A finding writes its input:
		# only without one is the run tried once more.
		if grep -q 'context deadline exceeded' <<<"$out" && ! grep -q 'Failing input written' <<<"$out"; then
			echo "--- $name: the engine's deadline race, no input found; running it again"
			out=$(fuzz) || { echo "$out"; exit 1; }
		else
			exit 1
		fi
	fi
	echo "$out"
	found=$((found + 1))
done < <(grep -rHo --include='*_test.go' '^func Fuzz[A-Za-z0-9_]*(' . | sort)
echo "$found fuzz targets run"

section "all checks passed"
