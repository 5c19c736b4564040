#!/usr/bin/env python3
"""How soon `handoff lsp` publishes diagnostics after an edit of a large flow:
a flow of N steps (default 5,000: `set` steps in a chain, a decision looping
back), opened, then edited 20 times (a template changed in the middle, each
edit one character, as typed), each time waiting for the diagnostics of that
version. The time counts from sending the edit to receiving them, so it holds
the server's 25 ms debounce. Also the time to the first diagnostics after
opening.

    cargo build --profile dist && scripts/bench-lsp.py [N]
"""
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("HANDOFF_BIN") or os.path.join(ROOT, "target", "dist", "handoff")
# Not a build older than the code checked out (scripts/build_check.py, beside this one).
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import build_check  # noqa: E402

build_check.fresh(BIN)


def flow(n):
    lines = ["flow: large", "fields:", "  tries: { type: number, default: 0 }",
             "  note: { type: text, input: true, default: \"\" }", "steps:"]
    for i in range(n - 1):
        lines += [f"  - id: s{i}", f"    set: {{ tries: \"{{{{ tries + {i % 7} }}}}\" }}"]
    lines += ["  - id: again", "    decision:", "      - when: \"tries < 3\"", "        goto: s0",
              "      - otherwise: end"]
    return "\n".join(lines) + "\n"


class Server:
    def __init__(self):
        self.p = subprocess.Popen([BIN, "lsp"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def send(self, msg):
        body = json.dumps(msg).encode()
        self.p.stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        self.p.stdin.flush()

    def receive(self):
        length = 0
        while True:
            line = self.p.stdout.readline().decode().strip()
            if not line:
                break
            if line.startswith("Content-Length:"):
                length = int(line.split(":")[1])
        return json.loads(self.p.stdout.read(length))

    def diagnostics(self, version):
        while True:
            m = self.receive()
            if m.get("method") == "textDocument/publishDiagnostics" and m["params"].get("version") == version:
                return m["params"]["diagnostics"]


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    text = flow(n)
    uri = "file:///bench/large.yaml"
    s = Server()
    s.send({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"capabilities": {}}})
    s.receive()
    s.send({"jsonrpc": "2.0", "method": "initialized", "params": {}})
    start = time.perf_counter()
    s.send({"jsonrpc": "2.0", "method": "textDocument/didOpen",
            "params": {"textDocument": {"uri": uri, "languageId": "yaml", "version": 1, "text": text}}})
    found = s.diagnostics(1)
    opened = time.perf_counter() - start
    if any(d["severity"] == 1 for d in found):
        raise SystemExit(f"the flow has errors: {found[:3]}")
    line = 5 + 2 * (n // 2) + 1  # the `set` of the middle step
    column = len("    set: { tries: \"{{ tries + ")
    times = []
    for version in range(2, 22):
        digit = str(version % 10)
        s.send({"jsonrpc": "2.0", "method": "textDocument/didChange", "params": {
            "textDocument": {"uri": uri, "version": version},
            "contentChanges": [{"range": {"start": {"line": line, "character": column},
                                          "end": {"line": line, "character": column + 1}}, "text": digit}]}})
        t = time.perf_counter()
        found = s.diagnostics(version)
        times.append(time.perf_counter() - t)
        if any(d["severity"] == 1 for d in found):
            raise SystemExit(f"an edit made an error: {found[:3]}")
    s.send({"jsonrpc": "2.0", "id": 2, "method": "shutdown"})
    s.send({"jsonrpc": "2.0", "method": "exit"})
    print(f"{n} steps, {len(text):,} bytes: first diagnostics {opened * 1000:.0f} ms after opening")
    print(f"after an edit: median {statistics.median(times) * 1000:.0f} ms, "
          f"worst {max(times) * 1000:.0f} ms (20 edits; the 25 ms debounce included)")


if __name__ == "__main__":
    main()
