#!/usr/bin/env bash
# Load on `handoff sim` from a separate process, with wrk (apt-get install wrk):
# the health endpoint as the baseline, then two task lists, in one run, as ratios.
# Usage: scripts/bench-sim-wrk.sh [seconds] [connections]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-5}
conns=${2:-16}
command -v wrk >/dev/null || { echo "wrk is not installed (apt-get install wrk)" >&2; exit 2; }
cargo build --profile dist --quiet
out=$(mktemp)
./target/dist/handoff sim --port 0 --quiet --token bench-token --task-delay 0s >"$out" &
sim=$!
trap 'kill $sim 2>/dev/null; rm -f "$out"' EXIT
for _ in $(seq 50); do grep -q listening "$out" && break; sleep 0.1; done
base=$(head -1 "$out" | awk '{print $NF}')
last=$(curl -s -X POST "$base/_sim/instances" -d '{"count": 1000, "delay": "0s"}' |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["instances"][-1]["id"])')
rate() {
  wrk -t1 -c"$conns" -d"${secs}s" -H 'Authorization: Bearer bench-token' "$base$1" |
    awk '/Requests\/sec/ {print $2}'
}
baseline=$(rate /_sim/health)
printf '%-42s %10s %7s\n' scenario req/s ratio
printf '%-42s %10.0f %7.2f\n' "baseline: GET /_sim/health" "$baseline" 1
for path in "/workflows/v2/tasks?workflowInstanceId=$last" "/workflows/v2/tasks?status=Active"; do
  r=$(rate "$path")
  printf '%-42s %10.0f %7.2f\n' "${path%%=*}=…" "$r" "$(awk -v a="$r" -v b="$baseline" 'BEGIN {print a / b}')"
done
