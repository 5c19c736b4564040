#!/usr/bin/env python3
"""Completions a second: `handoff run --each` against `handoff sim`, beside
the old way, one `handoff run` process per instance, 8 at a time (`xargs -P
8`), in the same run on the same machine. Hurl and wrk are compared too when
they are installed (`cargo install hurl --locked`, `apt-get install wrk`).

Each way completes its own N waiting instances (a list, a read of the task
and a PATCH of its assignment each), five times on fresh instances, and its
best time counts; the script checks through /_sim/state that every task was
completed exactly once.

    cargo build --profile dist && scripts/bench-batch.py [N]      # N defaults to 2000
"""
import http.client
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("HANDOFF_BIN") or os.path.join(ROOT, "target", "dist", "handoff")
# Not a build older than the code checked out (scripts/build_check.py, beside this one).
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import build_check  # noqa: E402

build_check.fresh(BIN)
FLOW = os.path.join(ROOT, "flows", "complete-nwc-task.yaml")
TOKEN = "bench-token-0123456789"


def start_sim():
    proc = subprocess.Popen([BIN, "--color", "never", "sim", "--port", "0", "--quiet",
                             "--token", TOKEN, "--task-delay", "0s"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:
        found = re.search(r"listening on http://([\d.]+):(\d+)", line)
        if found:
            threading.Thread(target=proc.stdout.read, daemon=True).start()
            return proc, found.group(1), int(found.group(2))
    raise SystemExit("the simulator did not start")


def call(conn, method, path, body=None):
    conn.request(method, path, body=json.dumps(body) if body is not None else None)
    r = conn.getresponse()
    return json.loads(r.read() or b"null")


def instances(conn, n, assignments=None):
    out = []
    while len(out) < n:
        made = call(conn, "POST", "/_sim/instances", {"count": min(1000, n - len(out)), "delay": "0s"})
        out += [(i["id"], i["taskId"]) for i in made["instances"]]
        if assignments is not None:
            assignments += [i["assignmentIds"][0] for i in made["instances"]]
    return out


# The HTTP ceiling: wrk sends the flow's own request mix (the list, the read
# of the task, the PATCH of its assignment), each instance at most once, over
# 8 keep-alive connections, for a fixed time; the completions the simulator
# counts in that time are the ceiling. No engine, no parsing: what the
# simulator and loopback allow.
WRK_LUA = r"""
local plan = {}
for line in io.lines(os.getenv("WRK_PLAN")) do
  local i, t, a = line:match("([^ ]+) ([^ ]+) ([^ ]+)")
  plan[#plan + 1] = { i, t, a }
end
local counter = 0
function setup(thread)
  thread:set("first", counter)
  counter = counter + 1
end
function init(args)
  k = first + 1
  step = 0
end
function request()
  local p = plan[k]
  if p == nil then
    return wrk.format("GET", "/_sim/health")
  end
  local auth = { ["Authorization"] = "Bearer " .. os.getenv("WRK_TOKEN"), ["Content-Type"] = "application/json" }
  if step == 0 then
    return wrk.format("GET", "/workflows/v2/tasks?workflowInstanceId=" .. p[1], auth)
  elseif step == 1 then
    return wrk.format("GET", "/workflows/v2/tasks/" .. p[2], auth)
  else
    return wrk.format("PATCH", "/workflows/v2/tasks/" .. p[2] .. "/assignments/" .. p[3], auth, '{"outcome":"Completed"}')
  end
end
function response(status, headers, body)
  step = step + 1
  if step == 3 then
    step = 0
    k = k + 8
  end
end
"""


def check(conn, made):
    tasks = {t["id"]: t for t in call(conn, "GET", "/_sim/state")["tasks"]}
    bad = [t for _, t in made if tasks[t]["completions"] != 1]
    if bad:
        raise SystemExit(f"{len(bad)} tasks were not completed exactly once")


def timed(label, made, conn, run):
    start = time.perf_counter()
    run()
    seconds = time.perf_counter() - start
    check(conn, made)
    rate = len(made) / seconds
    print(f"{label:<48} {rate:8.0f} completions/s  ({len(made)} in {seconds:.2f} s)")
    return rate


# Each way runs this many times, on fresh instances each time, and its best
# counts: on a shared two-core machine one run can be a third slower than
# the next for reasons of its own.
TRIES = 5


def best_of(label, conn, n, run):
    return max(timed(label, made, conn, lambda: run(made)) for made in
               (instances(conn, n) for _ in range(TRIES)))


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    sim, host, port = start_sim()
    base = f"http://{host}:{port}"
    env = {**os.environ, "NWC_BASE_URL": base, "NWC_TOKEN": TOKEN}
    conn = http.client.HTTPConnection(host, port)
    work = tempfile.mkdtemp(prefix="handoff-bench-")
    try:
        rates = {}
        rows = os.path.join(work, "rows.jsonl")

        def batch(made):
            with open(rows, "w") as f:
                for instance, _ in made:
                    f.write(json.dumps({"instance_id": instance}) + "\n")
            subprocess.run(
                [BIN, "--color", "never", "run", FLOW, "--each", rows, "--jobs", "8", "--quiet"],
                env=env, stdout=subprocess.DEVNULL, check=True)
        rates["batch"] = best_of("handoff run --each --jobs 8", conn, n, batch)

        # The old way, on fewer instances (it is slow): a process each.
        few = instances(conn, max(1, n // 4))
        ids = "\n".join(f"instance_id={i}" for i, _ in few)
        rates["process"] = timed("handoff run, a process an instance (xargs -P 8)", few, conn,
                                 lambda: subprocess.run(
                                     ["xargs", "-P", "8", "-I{}", BIN, "--color", "never", "run", FLOW,
                                      "--quiet", "--set", "{}"],
                                     input=ids, text=True, env=env, stdout=subprocess.DEVNULL, check=True))

        def hurl(more):
            files = []
            for k, (instance, _) in enumerate(more):
                path = os.path.join(work, f"complete-{k}.hurl")
                with open(path, "w") as f:
                    f.write(f"GET {base}/workflows/v2/tasks?workflowInstanceId={instance}\n"
                            f"Authorization: Bearer {TOKEN}\nHTTP 200\n"
                            "[Captures]\ntask: jsonpath \"$.tasks[0].id\"\n\n"
                            f"GET {base}/workflows/v2/tasks/{{{{task}}}}\n"
                            f"Authorization: Bearer {TOKEN}\nHTTP 200\n"
                            "[Captures]\nassignment: jsonpath \"$.taskAssignments[0].id\"\n\n"
                            f"PATCH {base}/workflows/v2/tasks/{{{{task}}}}/assignments/{{{{assignment}}}}\n"
                            f"Authorization: Bearer {TOKEN}\n"
                            "{\"outcome\": \"Completed\"}\nHTTP 204\n")
                files.append(path)
            subprocess.run(["hurl", "--jobs", "8", "--test", *files],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        if shutil.which("hurl"):
            rates["hurl"] = best_of("hurl --jobs 8 (list, read the task, PATCH)", conn, n, hurl)
        else:
            print("hurl is not installed: no comparison with it (cargo install hurl --locked)")
        def ceiling():
            assignments = []
            # More than wrk can finish in the time, so that it never idles.
            more = instances(conn, 20 * n, assignments)
            plan = os.path.join(work, "plan.txt")
            with open(plan, "w") as f:
                for (instance, task), aid in zip(more, assignments):
                    f.write(f"{instance} {task} {aid}\n")
            lua = os.path.join(work, "mix.lua")
            with open(lua, "w") as f:
                f.write(WRK_LUA)
            wrk_env = {**os.environ, "WRK_PLAN": plan, "WRK_TOKEN": TOKEN}
            seconds = 2
            subprocess.run(["wrk", "-t8", "-c8", f"-d{seconds}s", "-s", lua, base],
                           env=wrk_env, stdout=subprocess.DEVNULL, check=True)
            tasks = {t["id"]: t for t in call(conn, "GET", "/_sim/state")["tasks"]}
            done = [t for _, t in more if tasks[t]["completions"] == 1]
            if any(tasks[t]["completions"] > 1 for _, t in more):
                raise SystemExit("wrk completed a task twice")
            if len(done) == len(more):
                raise SystemExit("wrk ran out of instances: raise N")
            label = "wrk -t8 -c8, the same requests, no engine"
            print(f"{label:<48} {len(done) / seconds:8.0f} completions/s  ({len(done)} in {seconds} s)")
            return len(done) / seconds
        if shutil.which("wrk"):
            rates["wrk"] = max(ceiling() for _ in range(TRIES))
        else:
            print("wrk is not installed: no HTTP ceiling (apt-get install wrk)")
        print(f"best of {TRIES}: --each {rates['batch']:.0f}/s"
              + (f", hurl {rates['hurl']:.0f}/s" if "hurl" in rates else "")
              + (f", wrk {rates['wrk']:.0f}/s" if "wrk" in rates else ""))
        print(f"ratio: --each is {rates['batch'] / rates['process']:.1f}x a process an instance")
        if "hurl" in rates:
            print(f"ratio: --each is {rates['batch'] / rates['hurl']:.2f}x hurl")
        if "wrk" in rates:
            print(f"ratio: --each is {rates['batch'] / rates['wrk']:.0%} of the wrk ceiling")
    finally:
        sim.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
