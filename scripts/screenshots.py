#!/usr/bin/env python3
"""Regenerates the run page's screenshots in docs/images/ (docs/serve.md shows them).

Starts `handoff sim` and `handoff serve` (release build, the reference flow,
a throwaway store), starts four runs of complete-nwc-task (one whose task
appears after 40 polls, one found at once, one for an instance NWC does not
know, which gives up, and one still waiting), then has headless Chromium draw
the runs list and the page of the run with the long poll loop.

    python3 scripts/screenshots.py

Needs Debian's chromium (as the page tests do). Nothing here is a test: the
pictures are for people.
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
BIN = os.path.join(ROOT, "target", "release", "handoff")
OUT = os.path.join(ROOT, "docs", "images")
TOKEN = "screenshot-nwc-token-not-a-real-one"


def started(proc, stream, pattern):
    for line in stream:
        found = re.search(pattern, line)
        if found:
            threading.Thread(target=stream.read, daemon=True).start()
            return found
    raise SystemExit(f"{proc.args[2]} did not start")


def call(port, method, path, body=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request(method, path, body=json.dumps(body) if body is not None else None,
                 headers={"Content-Type": "application/json"})
    r = conn.getresponse()
    return json.loads(r.read() or b"null")


def shoot(url, path, height):
    subprocess.run(
        ["chromium", "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={tempfile.mkdtemp()}",
         f"--window-size=1200,{height}",
         f"--screenshot={path}", url],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    print(f"wrote {os.path.relpath(path, ROOT)}")


def main():
    if not shutil.which("chromium"):
        raise SystemExit("needs chromium: apt-get install chromium")
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    os.makedirs(OUT, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="handoff-shots-")
    sim = subprocess.Popen([BIN, "--color", "never", "sim", "--port", "0", "--token", TOKEN,
                            "--task-delay", "0s"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    found = started(sim, sim.stdout, r"listening on http://([\d.]+):(\d+)")
    sim_port = int(found.group(2))
    flows = os.path.join(tmp, "flows")
    os.makedirs(flows)
    shutil.copy(os.path.join(ROOT, "flows", "complete-nwc-task.yaml"), flows)
    env = {**os.environ, "NWC_BASE_URL": f"http://127.0.0.1:{sim_port}", "NWC_TOKEN": TOKEN,
           "HANDOFF_STORE_KEY": "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="}
    env.pop("HANDOFF_API_TOKEN", None)
    serve = subprocess.Popen([BIN, "--color", "never", "serve", flows, "--listen", "127.0.0.1:0",
                              "--store", os.path.join(tmp, "handoff.db")],
                             stderr=subprocess.PIPE, text=True, env=env)
    port = int(started(serve, serve.stderr, r"listening on http://127\.0\.0\.1:(\d+)").group(1))
    try:
        def instance(after_polls):
            made = call(sim_port, "POST", "/_sim/instances", {"delay": "0s", "after_polls": after_polls})
            return made["instances"][0]["id"]

        def start(instance_id, interval, tries):
            run = call(port, "POST", "/v1/flows/complete-nwc-task/runs",
                       {"inputs": {"instance_id": instance_id, "poll_interval": interval,
                                   "max_tries": tries}})
            return run["id"]

        looped = start(instance(40), "100ms", 60)
        start(instance(0), "1s", 10)
        start("0bd2c6f4-unknown-instance", "100ms", 3)
        start(instance(1000), "30m", 10)
        deadline = time.time() + 60
        while call(port, "GET", f"/v1/runs/{looped}")["status"] != "succeeded":
            if time.time() > deadline:
                raise SystemExit("the long poll loop did not finish")
            time.sleep(0.2)
        time.sleep(1)
        base = f"http://127.0.0.1:{port}"
        shoot(f"{base}/", os.path.join(OUT, "runs-list.png"), 620)
        shoot(f"{base}/runs/{looped}", os.path.join(OUT, "run-page.png"), 1900)
    finally:
        serve.terminate()
        sim.terminate()
        serve.wait()
        sim.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
