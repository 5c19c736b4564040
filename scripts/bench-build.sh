#!/usr/bin/env bash
# How long a newcomer waits: a cold release build (the README's first
# command), and the second, `cargo test`: its cold build, its run, and its
# build again after touching one file. Two commits of this repository, one
# after the other on the same machine, each in a fresh clone with its own
# target folder; the figure to carry over to another machine is the ratio,
# HEAD / BASE.
#
#   scripts/bench-build.sh BASE [HEAD]       (HEAD defaults to the checkout's HEAD)
#
# Both commits' tests get the same Postgres cluster (an older commit skips
# its Postgres tests without one), started here with scripts/pg.sh. The
# registry is not cleared: crates are downloaded once, as on a machine that
# has built any Rust before. Run it on a quiet machine: about half an hour
# on 2 cores.
set -euo pipefail
repo=$(git -C "$(dirname "$0")/.." rev-parse --show-toplevel)
base=$(git -C "$repo" rev-parse --short "${1:?usage: scripts/bench-build.sh BASE [HEAD]}")
head=$(git -C "$repo" rev-parse --short "${2:-HEAD}")
work=$(mktemp -d /tmp/handoff-bench-build.XXXXXX)
# Postgres runs as its own user under root: it must reach its folder.
chmod 755 "$work"
unset CI
export HANDOFF_TEST_PG_DIR="$work/pg"
HANDOFF_TEST_PG_URL=$("$repo/scripts/pg.sh" start "$HANDOFF_TEST_PG_DIR")
export HANDOFF_TEST_PG_URL
trap '"$repo/scripts/pg.sh" stop "$HANDOFF_TEST_PG_DIR" || true; rm -rf "$work"' EXIT

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
  took[$commit,test_build]=$(seconds cargo test --no-run)
  took[$commit,test_run]=$(seconds cargo test)
  touch src/run/trace.rs
  took[$commit,test_touched]=$(seconds cargo test --no-run)
  cd "$repo"
  rm -rf "$dir"
done

printf '%-46s %10s %10s %7s\n' "" "$base" "$head" "ratio"
for what in release:"cold cargo build --release" test_build:"cold cargo test --no-run (the build)" \
            test_run:"cargo test, built (the run)" test_touched:"cargo test --no-run after touching a file"; do
  key=${what%%:*}; label=${what#*:}
  a=${took[$base,$key]}; b=${took[$head,$key]}
  printf '%-46s %9.0fs %9.0fs %7.2f\n' "$label" "$a" "$b" "$(echo "$b / $a" | bc -l)"
done
