#!/usr/bin/env python3
"""`handoff check` on a flow whose source is a 5 MB OpenAPI document.

Builds a description of about 5 MB from tests/files/openapi/jobs.yaml's
shapes: 1,500 paths, each with a GET and a POST, their parameters and
schemas behind `$ref`s to per-path components, in JSON and in YAML. A flow
calls one operation of it with a literal parameter (so a validator is
compiled) and a body. Prints the best wall time of `check` over several
runs, for the flow with the description and for the same flow's steps
without it (the baseline), and their ratio. The goal is under 200 ms.

    scripts/bench-openapi.py [BINARY]   (default: target/dist/handoff)
"""

import json
import os
import subprocess
import sys
import tempfile
import time

BIN = sys.argv[1] if len(sys.argv) > 1 else "target/dist/handoff"
# Not a build older than the code checked out (scripts/build_check.py, beside this one).
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import build_check  # noqa: E402

build_check.fresh(BIN)
PATHS = 1900
RUNS = 7


def document():
    paths, schemas, parameters = {}, {}, {}
    for i in range(PATHS):
        schemas[f"Job{i}"] = {
            "type": "object",
            "required": ["id", "state"],
            "description": "A job of the inspection service, as its API describes it, with every field it has. " * 3,
            "properties": {
                "id": {"type": "string", "description": "The job's id."},
                "state": {"type": "string", "enum": ["queued", "running", "ready", "failed"]},
                "container": {"type": "string", "minLength": 1},
                "priority": {"type": "integer", "minimum": 0, "maximum": 9},
                "finished_at": {"type": ["string", "null"], "format": "date-time"},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "steps": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "name": {"type": "string"},
                            "passed": {"type": "boolean"},
                            "notes": {"type": "string", "maxLength": 2000},
                        },
                    },
                },
            },
        }
        parameters[f"JobId{i}"] = {
            "name": "jobId", "in": "path", "required": True,
            "schema": {"type": "string", "pattern": "^[a-z0-9-]+$"},
        }
        ref = {"$ref": f"#/components/schemas/Job{i}"}
        paths[f"/area{i}/jobs/{{jobId}}"] = {
            "parameters": [{"$ref": f"#/components/parameters/JobId{i}"}],
            "get": {
                "operationId": f"getJob{i}",
                "summary": "One job's state, with its steps and their results.",
                "parameters": [
                    {"name": "verbose", "in": "query", "schema": {"type": "boolean"}},
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100}},
                ],
                "responses": {
                    "200": {"description": "The job", "content": {"application/json": {"schema": ref}}},
                    "404": {"description": "No such job"},
                },
            },
            "post": {
                "operationId": f"updateJob{i}",
                "requestBody": {"required": True, "content": {"application/json": {"schema": ref}}},
                "responses": {"200": {"description": "Updated", "content": {"application/json": {"schema": ref}}}},
            },
        }
    return {
        "openapi": "3.1.0",
        "info": {"title": "A large job-status API", "version": "1"},
        "servers": [{"url": "https://jobs.example.com"}],
        "paths": paths,
        "components": {"schemas": schemas, "parameters": parameters},
    }


def to_yaml(value, indent=0):
    pad = "  " * indent
    out = []
    if isinstance(value, dict):
        for k, v in value.items():
            key = json.dumps(k)
            if isinstance(v, (dict, list)) and v:
                out.append(f"{pad}{key}:")
                out.append(to_yaml(v, indent + 1))
            else:
                out.append(f"{pad}{key}: {json.dumps(v)}")
    else:
        for v in value:
            if isinstance(v, (dict, list)) and v:
                inner = to_yaml(v, indent + 1).lstrip()
                out.append(f"{pad}- {inner}")
            else:
                out.append(f"{pad}- {json.dumps(v)}")
    return "\n".join(out)


FLOW = """
flow: bench-openapi
fields:
  job_id: {{ type: text, input: true, default: job-1 }}
  job: {{ type: json, default: null }}
{sources}
steps:
  - id: read
{step}
"""

CALL = """    call:
      operation: jobs.getJob{n}
      params: {{ jobId: "{{{{ job_id }}}}", verbose: true, limit: 10 }}
    output: {{ body: job }}
  - id: update
    call:
      operation: jobs.updateJob{n}
      params: {{ jobId: "{{{{ job_id }}}}" }}
      body: {{ id: "{{{{ job_id }}}}", state: ready, priority: 3 }}"""

PLAIN = """    http: { url: "https://jobs.example.com/area1/jobs/{{ job_id }}?verbose=true&limit=10" }
    output: { body: job }
  - id: update
    http:
      method: POST
      url: "https://jobs.example.com/area1/jobs/{{ job_id }}"
      json: { id: "{{ job_id }}", state: ready, priority: 3 }"""


def best(args):
    times = []
    for _ in range(RUNS):
        start = time.perf_counter()
        out = subprocess.run(args, capture_output=True, text=True)
        times.append(time.perf_counter() - start)
        if out.returncode != 0:
            sys.exit(f"{' '.join(args)} failed:\n{out.stderr}")
    return min(times)


def main():
    doc = document()
    with tempfile.TemporaryDirectory() as d:
        files = {
            "json": json.dumps(doc, indent=1),
            "yaml": to_yaml(doc) + "\n",
        }
        plain = os.path.join(d, "plain.yaml")
        with open(plain, "w") as f:
            f.write(FLOW.format(sources="", step=PLAIN))
        base = best([BIN, "check", plain])
        print(f"check, no description (baseline): {base * 1000:.1f} ms")
        for kind, text in files.items():
            path = os.path.join(d, f"jobs.{kind}")
            with open(path, "w") as f:
                f.write(text)
            flow = os.path.join(d, f"flow-{kind}.yaml")
            sources = f"sources:\n  jobs:\n    openapi: jobs.{kind}"
            with open(flow, "w") as f:
                f.write(FLOW.format(sources=sources, step=CALL.format(n=PATHS - 1)))
            t = best([BIN, "check", flow])
            mb = len(text.encode()) / 1e6
            print(f"check, {mb:.1f} MB {kind.upper()} description: {t * 1000:.1f} ms "
                  f"({t / base:.1f}x the baseline; goal under 200 ms)")


if __name__ == "__main__":
    main()
