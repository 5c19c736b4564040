#!/usr/bin/env python3
"""The dry-run engine on the seed's poll loop: steps a second, trace size, memory.

Runs the reference flow (flows/complete-nwc-task.yaml, with `max_steps`
raised so that the loop may run long) against a mock whose `find_task`
always answers an empty task list of the real shape, so every iteration is
the five steps of a poll that finds nothing (`get_tasks`, `deserialize_id`,
the counter `set`, the `decision`, a 1 s `timer`) until `max_tries` gives
up. As `--dry-run --trace jsonl --trace-file`, stdout to /dev/null, the
NWC token a secret in scope. 10 iterations are the baseline (what starting
the process costs); 2,000 and 10,000 are measured past it, best of seven,
each with a plain trace file (`.jsonl`) and a compressed one (`.jsonl.gz`),
whose size is compared with the plain one's.

    cargo build --profile dist && scripts/bench-poll-loop.py

scripts/bench-engine.py measures the plainer two-step loop; this one is the
loop the seed's worker runs. $HANDOFF_BIN runs another build for comparison.
"""
import gzip
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("HANDOFF_BIN") or os.path.join(ROOT, "target", "dist", "handoff")
# Not a build older than the code checked out (scripts/build_check.py, beside this one).
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import build_check  # noqa: E402

build_check.fresh(BIN)
FLOW = os.path.join(ROOT, "flows", "complete-nwc-task.yaml")

# The list NWC answers while the task does not exist yet: its real shape, no tasks.
MOCK = """description: NWC has not created the task yet, however often it is asked
responses:
  - step: find_task
    body: { tasks: [], nextLink: null }
"""


def setup(tmp):
    with open(FLOW) as f:
        source = f.read()
    # The flow as it is, but for a budget that lets it poll 10,000 times.
    flow = source.replace("\ntitle:", "\nmax_steps: 1000000\ntitle:", 1)
    assert flow != source, "the reference flow has no `title:` line to put `max_steps` before"
    paths = (os.path.join(tmp, "poll.yaml"), os.path.join(tmp, "poll.mock.yaml"))
    for path, text in zip(paths, (flow, MOCK)):
        with open(path, "w") as f:
            f.write(text)
    return paths


def once(flow, mock, iterations, trace_file):
    args = [BIN, "--color", "never", "run", flow, "--mock", mock,
            "--set", "instance_id=7c1e0000-bench", "--set", "poll_interval=1s",
            "--set", f"max_tries={iterations}", "--trace", "jsonl", "--trace-file", trace_file]
    env = {**os.environ, "NWC_TOKEN": "bench-secret-token-0123", "NWC_BASE_URL": "https://nwc.invalid"}
    start = time.perf_counter()
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # This child's own peak memory (wait4), not the largest of every child so far.
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    # The run gives up (exit code 1): that is the loop ending as it should.
    if proc.returncode not in (0, 1):
        raise SystemExit(f"the run failed with exit code {proc.returncode}")
    opener = gzip.open if trace_file.endswith(".gz") else open
    with opener(trace_file, "rt") as f:
        steps = sum(1 for line in f if '"event":"step_started"' in line)
    return wall, steps, os.path.getsize(trace_file), usage.ru_maxrss


def best(flow, mock, iterations, trace_file, runs=7):
    results = [once(flow, mock, iterations, trace_file) for _ in range(runs)]
    return min(r[0] for r in results), results[0][1], results[0][2], max(r[3] for r in results)


def main():
    tmp = tempfile.mkdtemp(prefix="handoff-poll-")
    flow, mock = setup(tmp)
    trace_file = os.path.join(tmp, "trace.jsonl")
    base, base_steps, _, base_rss = best(flow, mock, 10, trace_file)
    print(f"the poll loop, --trace jsonl --trace-file: the process alone (10 polls, "
          f"{base_steps} steps) {base * 1000:.0f} ms, peak RSS {base_rss / 1024:.1f} MiB")
    compressed = trace_file + ".gz"
    for n in (2_000, 10_000):
        plain_size = None
        for path in (trace_file, compressed):
            wall, steps, size, rss = best(flow, mock, n, path)
            rate = (steps - base_steps) / max(wall - base, 1e-9)
            ratio = "" if plain_size is None else f", {size / plain_size:.3f} of the plain one"
            plain_size = plain_size or size
            print(f"  {n:>6} polls ({steps} steps), {os.path.basename(path)}: {wall * 1000:6.0f} ms, "
                  f"{rate / 1000:6.0f} k steps/s past start-up, trace {size / 1e6:.2f} MB "
                  f"({size / steps:.0f} bytes a step{ratio}), peak RSS {rss / 1024:.1f} MiB")
    for path in (flow, mock, trace_file, compressed):
        os.remove(path)
    os.rmdir(tmp)


if __name__ == "__main__":
    sys.exit(main())
