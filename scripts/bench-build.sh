#!/usr/bin/env bash
# How long a newcomer waits: a cold release build (the README's first
# command), and `cargo test` cold, warm and after touching one file (the
# second), for two commits of this repository, one after the other on the
# same machine, each in a fresh clone with its own target folder. The figure
# to carry over to another machine is the ratio, HEAD / BASE.
#
#   scripts/bench-build.sh BASE [HEAD]       (HEAD defaults to the checkout's HEAD)
#
# The registry is not cleared: crates are downloaded once, as on a machine
# that has built any Rust before. Run it on a quiet machine: it takes about
# half an hour on 2 cores.
set -euo pipefail
repo=$(git -C "$(dirname "$0")/.." rev-parse --show-toplevel)
base=$(git -C "$repo" rev-parse --short "${1:?usage: scripts/bench-build.sh BASE [HEAD]}")
head=$(git -C "$repo" rev-parse --short "${2:-HEAD}")
work=$(mktemp -d /tmp/handoff-bench-build.XXXXXX)
trap 'rm -rf "$work"' EXIT
# The tests find their parts themselves; a variable from a shell would make
# the two commits test different things.
unset HANDOFF_TEST_PG_URL HANDOFF_TEST_PG_DIR CI

seconds() {
  local start end
  start=$(date +%s.%N)
  "$@" >"$work/last.log" 2>&1 || { tail -n 30 "$work/last.log" >&2; echo "failed: $*" >&2; exit 1; }
  end=$(date +%s.%N)
  echo "$end - $start" | bc
}

declare -A took
for commit in "$base" "$head"; do
  dir="$work/$commit"
  git clone -q "$repo" "$dir"
  git -C "$dir" checkout -q "$commit"
  cd "$dir"
  took[$commit,release]=$(seconds cargo build --release)
  took[$commit,test_cold]=$(seconds cargo test)
  took[$commit,test_warm]=$(seconds cargo test)
  touch src/run/trace.rs
  took[$commit,test_touched]=$(seconds cargo test)
  rm -rf target
  cd "$repo"
done

printf '%-44s %10s %10s %7s\n' "" "$base" "$head" "ratio"
for what in release:"cold cargo build --release" test_cold:"cold cargo test (build and run)" \
            test_warm:"warm cargo test (nothing changed)" test_touched:"cargo test after touching one file"; do
  key=${what%%:*}; label=${what#*:}
  a=${took[$base,$key]}; b=${took[$head,$key]}
  printf '%-44s %9.0fs %9.0fs %7.2f\n' "$label" "$a" "$b" "$(echo "$b / $a" | bc -l)"
done
