#!/usr/bin/env python3
"""What durability costs the reference flow: `run --each` against `serve`.

The same N instances of `handoff sim` (task there at once) completed three
ways, alternating, three times each on fresh instances, the best of each
counting:

- `run --each ROWS --jobs 8 --quiet`: runs in memory, nothing stored;
- `serve` on SQLite, the runs started by bulk starts of 1,000 (one call each);
- `serve` on Postgres (a throwaway cluster from scripts/pg.sh; skipped when
  Postgres is not installed), started the same way.

For each: completions a second (from the first start to the last completion),
the handoff process's CPU a completion (user + system, from /proc), and the
ratio to `run --each`; every task is checked to have been completed exactly
once. The goal of issue 29: serve at least half of `run --each`.

Where the machine's CPU went, a completion: handoff's, the simulator's and
(for `serve` on Postgres) the server's, its backends' included. Their sum
bounds the rate: N cores complete at most N / sum a second, whatever waits
on what. The last lines set that bound of each way beside what it reached.

Two ratios: of the bests (each way's best try against `run --each`'s best),
and the median of each round's own ratio (a round runs the three ways one
after the other, so a round's ratio compares runs minutes apart rather than
the luckiest try of each). On a shared machine whose speed drifts by half
within an hour, the second is the steadier: both are printed.

With `--polls K`, each task appears only after K polls, 1 ms apart: every
run then waits K times (under `serve`, as a row the scheduler wakes), the
seed's poll loop rather than a task that is there at once.

    cargo build --profile dist && scripts/bench-durable.py [N] [--polls K] [--tries T]   # 2000, 0, 5
"""
import contextlib
import importlib.util
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BIN = os.environ.get("HANDOFF_BIN") or os.path.join(ROOT, "target", "dist", "handoff")
# Not a build older than the code checked out (scripts/build_check.py, beside this one).
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import build_check  # noqa: E402

build_check.fresh(BIN)
FLOW = os.path.join(ROOT, "flows", "complete-nwc-task.yaml")
TRIES = 5
TICKS = os.sysconf("SC_CLK_TCK")


def _load(name, file):
    spec = importlib.util.spec_from_file_location(name, os.path.join(HERE, file))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# The simulator, instances, the exactly-once check and Postgres helpers: the other benchmarks'.
_pg = _load("bench_postgres", "bench-postgres.py")


def cpu_of(pid):
    """User + system seconds a live process has used."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def tree_cpu(pid):
    """User + system seconds of a live process and its children, those it has
    reaped included (Postgres: the postmaster, its backends and helpers)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    total = sum(int(x) for x in fields[11:15]) / TICKS
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                child = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(child[1]) == pid:
            total += (int(child[11]) + int(child[12])) / TICKS
    return total


def inputs(instance, polls):
    """A run's inputs: a poll loop's interval when tasks come after polls."""
    return {"instance_id": instance, **({"poll_interval": "1ms", "max_tries": polls + 5} if polls else {})}


def rows_file(made, work, polls):
    """The instances as `run --each` rows, one run's inputs a line."""
    rows = os.path.join(work, "rows.jsonl")
    with open(rows, "w") as f:
        for instance, _ in made:
            f.write(json.dumps(inputs(instance, polls)) + "\n")
    return rows


def flows_dir(work):
    """A folder holding the reference flow, for `serve`."""
    flows = os.path.join(work, "flows")
    os.makedirs(flows, exist_ok=True)
    shutil.copy(FLOW, flows)
    return flows


def start_bulk(port, made, polls):
    """A run for each instance, by bulk starts of 1,000 (one call each)."""
    for at in range(0, len(made), 1000):
        runs = [{"inputs": inputs(i, polls)} for i, _ in made[at:at + 1000]]
        status, text = _pg.call(port, "POST", "/v1/flows/complete-nwc-task/runs", {"runs": runs})
        if status != 201:
            raise SystemExit(f"a bulk start failed: {status} {text[:300]}")


def wait_succeeded(port, n, every):
    """Until `/metrics` counts n runs of the flow succeeded, read every `every` seconds."""
    while True:
        _, text = _pg.call(port, "GET", "/metrics")
        done = sum(int(float(line.rsplit(" ", 1)[1])) for line in text.decode().splitlines()
                   if line.startswith('handoff_runs{flow="complete-nwc-task",status="succeeded"}'))
        if done >= n:
            return
        time.sleep(every)


def each(sim_port, made, work, polls, others=()):
    """Seconds, handoff's CPU seconds, and those of each of `others` (a
    function a process: its CPU seconds so far) over the same time."""
    rows = rows_file(made, work, polls)
    env = {**os.environ, "NWC_BASE_URL": f"http://127.0.0.1:{sim_port}", "NWC_TOKEN": _pg.TOKEN}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    others_before = [cpu() for cpu in others]
    start = time.perf_counter()
    subprocess.run([BIN, "--color", "never", "run", FLOW, "--each", rows, "--jobs", "8", "--quiet"],
                   env=env, stdout=subprocess.DEVNULL, check=True)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    spent = [cpu() - b for cpu, b in zip(others, others_before)]
    return seconds, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), spent


def served(sim_port, made, store, work, polls, others=()):
    """As `each`, through `serve`: from the first bulk start to the last completion."""
    (proc, port), = _pg.start_workers(store, sim_port, 1, flows_dir(work))
    try:
        cpu_before = cpu_of(proc.pid)
        others_before = [cpu() for cpu in others]
        start = time.perf_counter()
        start_bulk(port, made, polls)
        wait_succeeded(port, len(made), 0.01)
        seconds = time.perf_counter() - start
        spent = [cpu() - b for cpu, b in zip(others, others_before)]
        return seconds, cpu_of(proc.pid) - cpu_before, spent
    finally:
        _pg.stop([(proc, port)])


def postgres_installed():
    """Whether scripts/pg.sh can start a cluster here."""
    return bool(shutil.which("psql")) and any(
        os.path.exists(f"/usr/lib/postgresql/{v}/bin/initdb")
        for v in os.listdir("/usr/lib/postgresql") if v.isdigit())


@contextlib.contextmanager
def machine(prefix, postgres):
    """A simulator, a work folder and, when `postgres`, a throwaway cluster
    (scripts/pg.sh): (sim, sim_port, work, pg_dir, pg_url); all gone after."""
    sim = subprocess.Popen([BIN, "--color", "never", "sim", "--port", "0", "--quiet", "--token", _pg.TOKEN,
                            "--task-delay", "0s"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    work = tempfile.mkdtemp(prefix=f"handoff-{prefix}-")
    # Its own folder, which pg.sh hands to the postgres user.
    pg_dir = tempfile.mkdtemp(prefix=f"handoff-{prefix}-pg-")
    pg_url = None
    try:
        sim_port = _pg.read_port(sim, r"listening on http://[\d.]+:(\d+)")
        if postgres:
            pg_url = subprocess.run([os.path.join(HERE, "pg.sh"), "start", pg_dir], check=True,
                                    capture_output=True, text=True).stdout.strip().splitlines()[-1]
        yield sim, sim_port, work, pg_dir, pg_url
    finally:
        sim.kill()
        if pg_url:
            subprocess.run([os.path.join(HERE, "pg.sh"), "stop", pg_dir], capture_output=True)
        shutil.rmtree(pg_dir, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)


def main():
    args = sys.argv[1:]
    polls = 0
    if "--polls" in args:
        at = args.index("--polls")
        polls = int(args[at + 1])
        del args[at:at + 2]
    tries = TRIES
    if "--tries" in args:
        at = args.index("--tries")
        tries = int(args[at + 1])
        del args[at:at + 2]
    n = int(args[0]) if args else 2000
    with machine("bench-durable", postgres_installed()) as (sim, sim_port, work, pg_dir, pg_url):
        measure(n, tries, polls, sim, sim_port, work, pg_dir, pg_url)


def measure(n, tries, polls, sim, sim_port, work, pg_dir, pg_url):
    """The rounds, and what they add up to."""
    ways = ["run --each", "serve, SQLite"] + (["serve, Postgres"] if pg_url else [])
    others = [lambda: cpu_of(sim.pid)]
    if pg_url:
        with open(os.path.join(pg_dir, "data", "postmaster.pid")) as f:
            postmaster = int(f.readline())
        others.append(lambda: tree_cpu(postmaster))
    best = {}
    rounds = []
    # A completion's CPU, each round: handoff's, the simulator's, Postgres's.
    spent = {way: [] for way in ways}
    reached = {way: [] for way in ways}
    for attempt in range(tries):
        rates = {}
        for way in ways:
            made = _pg.instances(sim_port, n, polls)
            round_dir = os.path.join(work, f"{attempt}-{ways.index(way)}")
            os.makedirs(round_dir)
            if way == "run --each":
                seconds, cpu, theirs = each(sim_port, made, round_dir, polls, others)
            elif way == "serve, SQLite":
                seconds, cpu, theirs = served(sim_port, made, os.path.join(round_dir, "handoff.db"),
                                              round_dir, polls, others)
            else:
                url = _pg.database(pg_url, f"bench_durable_{attempt}")
                seconds, cpu, theirs = served(sim_port, made, url, round_dir, polls, others)
            _pg.check(sim_port, made)
            rate = n / seconds
            rates[way] = rate
            reached[way].append(rate)
            # Postgres counts only where it is the store: elsewhere it idles.
            parts = [cpu, theirs[0], theirs[1] if way == "serve, Postgres" else 0.0]
            spent[way].append([x * 1e3 / n for x in parts])
            print(f"{way:<16} {rate:7.0f} completions/s  {cpu * 1e3 / n:6.2f} ms CPU a completion"
                  f"  (simulator {parts[1] * 1e3 / n:.2f}"
                  + (f", Postgres {parts[2] * 1e3 / n:.2f}" if way == "serve, Postgres" else "") + ")")
            if rate > best.get(way, (0, 0))[0]:
                best[way] = (rate, cpu * 1e3 / n)
        rounds.append({way: rates[way] / rates["run --each"] for way in ways[1:]})
        print("round's ratios: " + ", ".join(f"{way} {r:.2f}" for way, r in rounds[-1].items()))
    print()
    base_rate, base_cpu = best["run --each"]
    for way in ways:
        rate, cpu = best[way]
        print(f"best {way:<16} {rate:7.0f}/s ({rate / base_rate:.2f} of run --each), "
              f"{cpu:5.2f} ms CPU a completion ({cpu / base_cpu:.1f}×)")
    for way in ways[1:]:
        ratios = sorted(r[way] for r in rounds)
        print(f"median of {len(ratios)} rounds' ratios, {way}: {statistics.median(ratios):.2f} "
              f"(from {ratios[0]:.2f} to {ratios[-1]:.2f})")
    # What the CPU allows: N cores, busy with nothing else, complete at
    # most N / (all the CPU a completion takes) a second.
    cores = len(os.sched_getaffinity(0))
    print(f"\nthe machine's CPU a completion, medians of the rounds ({cores} cores):")
    for way in ways:
        handoff, simulator, postgres = (statistics.median(p[i] for p in spent[way]) for i in range(3))
        whole = handoff + simulator + postgres
        print(f"{way:<16} handoff {handoff:.3f} + simulator {simulator:.3f} + Postgres {postgres:.3f}"
              f" = {whole:.3f} ms: at most {cores * 1e3 / whole:6.0f}/s, "
              f"reached {statistics.median(reached[way]):6.0f}/s")


if __name__ == "__main__":
    sys.exit(main())
