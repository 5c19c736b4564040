#!/usr/bin/env python3
"""What a durable run costs in instructions: the `serve` worker under callgrind.

Timing cannot tell a few percent apart on a shared two-core machine (one
build's CPU a run spreads by ±20% within an hour; docs/performance.md).
`valgrind --tool=callgrind` counts the instructions a process executes, which
do not depend on what else the machine is doing, so this is the measure of a
change to the worker's own code:

- the reference flow against `handoff sim` (tasks there at once), N runs
  started by bulk starts of 1,000 through `serve`'s API, on SQLite or on a
  throwaway Postgres cluster (scripts/pg.sh);
- the worker runs under callgrind; `/metrics` is read once a second until
  every run has succeeded, then the worker is stopped with SIGTERM so that
  callgrind writes its counts; every task is checked to have been completed
  exactly once;
- with `--baseline BIN`, the same for another build (the build before a
  change), alternating, and the ratio of the two counts;
- with `--each`, also `run --each --jobs 8 --quiet` over the same number of
  instances (nothing stored), for what durability adds.

Counts include what only valgrind's slowness causes (a run lasting fifty
times longer renews its lease more often: ~35 k instructions a run), and the
store's own work varies with how batches fall (±5% on SQLite between runs of
one build; Postgres's server is another process and not counted).

    cargo build --profile dist && scripts/count-durable.py [N] [--store sqlite|postgres]
        [--baseline BIN] [--rounds R] [--each]        # 1500, sqlite, -, 1
"""
import importlib.util
import os
import shutil
import signal
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BIN = os.environ.get("HANDOFF_BIN") or os.path.join(ROOT, "target", "dist", "handoff")
# Not a build older than the code checked out (scripts/build_check.py, beside this one).
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import build_check  # noqa: E402

build_check.fresh(BIN)
FLOW = os.path.join(ROOT, "flows", "complete-nwc-task.yaml")


def _load(name, file):
    spec = importlib.util.spec_from_file_location(name, os.path.join(HERE, file))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# The simulator's instances, the workers, the API calls and the exactly-once check, and the
# reference flow's rows, bulk starts and wait: the other benchmarks'.
_durable = _load("bench_durable", "bench-durable.py")
_pg = _durable._pg


def total(out_file):
    """The instructions a callgrind file counts (its `totals:` line)."""
    with open(out_file) as f:
        for line in f:
            if line.startswith("totals:") or line.startswith("summary:"):
                return int(line.split()[1])
    raise SystemExit(f"no totals in {out_file}")


def served(binary, sim_port, made, store, work):
    """The worker's instructions for the runs of `made`, under callgrind."""
    out_file = os.path.join(work, "callgrind.out")
    under = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out_file}"]
    (proc, port), = _pg.start_workers(store, sim_port, 1, _durable.flows_dir(work), binary, under)
    try:
        _durable.start_bulk(port, made, 0)
        _durable.wait_succeeded(port, len(made), 1)
        # callgrind writes its counts as the worker exits.
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return total(out_file)


def each(binary, sim_port, made, work):
    """`run --each --quiet`'s instructions for the runs of `made`."""
    rows = _durable.rows_file(made, work, 0)
    out_file = os.path.join(work, "callgrind-each.out")
    env = dict(os.environ, NWC_BASE_URL=f"http://127.0.0.1:{sim_port}", NWC_TOKEN=_pg.TOKEN)
    subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out_file}", binary,
                    "--color", "never", "run", FLOW, "--each", rows, "--jobs", "8", "--quiet"],
                   env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return total(out_file)


def main():
    args = sys.argv[1:]

    def option(name, default):
        if name in args:
            at = args.index(name)
            value = args[at + 1]
            del args[at:at + 2]
            return value
        return default

    store_kind = option("--store", "sqlite")
    baseline = option("--baseline", None)
    rounds = int(option("--rounds", "1"))
    with_each = "--each" in args
    if with_each:
        args.remove("--each")
    n = int(args[0]) if args else 1500
    if store_kind not in ("sqlite", "postgres"):
        raise SystemExit("--store is sqlite or postgres")
    if not shutil.which("valgrind"):
        raise SystemExit("valgrind is not installed (Debian: apt-get install valgrind)")
    builds = [("this build", BIN)] + ([("baseline", baseline)] if baseline else [])
    counts = {name: [] for name, _ in builds}
    with _durable.machine("count-durable", store_kind == "postgres") as (_, sim_port, work, _, pg_url):
        for r in range(rounds):
            # The baseline first in odd rounds: neither build always goes first.
            order = builds if r % 2 == 0 else list(reversed(builds))
            for name, binary in order:
                made = _pg.instances(sim_port, n)
                round_dir = os.path.join(work, f"{r}-{name.replace(' ', '-')}")
                os.makedirs(round_dir)
                if pg_url:
                    store = _pg.database(pg_url, f"count_durable_{r}_{builds.index((name, binary))}")
                else:
                    store = os.path.join(round_dir, "handoff.db")
                count = served(binary, sim_port, made, store, round_dir)
                _pg.check(sim_port, made)
                counts[name].append(count)
                print(f"{name:<10} round {r + 1}: {count / 1e6:9,.1f} M instructions, "
                      f"{count / n / 1e3:6,.0f} k a run")
        if with_each:
            made = _pg.instances(sim_port, n)
            count = each(BIN, sim_port, made, work)
            _pg.check(sim_port, made)
            print(f"run --each, this build: {count / 1e6:9,.1f} M instructions, {count / n / 1e3:6,.0f} k a run")
        if baseline:
            print(f"this build against the baseline (the lowest count of each): "
                  f"{min(counts['this build']) / min(counts['baseline']):.3f}")


if __name__ == "__main__":
    sys.exit(main())
