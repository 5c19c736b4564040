"""Refuses to measure a build older than the sources it claims to be.

The benchmarks measure `target/dist/handoff` unless told otherwise. A trial
build left there (made from an edit since reverted) or a build from before
the last change looks like a fast or a slow hour, and its figures end up in
docs/performance.md as the code's. Any source newer than the binary means it
was not built from what is checked out: build it again first. Another build
named on purpose ($HANDOFF_BIN, or a path given to a script) is not checked.
"""
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT = os.path.join(ROOT, "target", "dist", "handoff")
SOURCES = ("src", "migrations", "Cargo.toml", "Cargo.lock", "build.rs")


def sources():
    for name in SOURCES:
        path = os.path.join(ROOT, name)
        if os.path.isfile(path):
            yield path
        for folder, _, files in os.walk(path):
            for file in files:
                yield os.path.join(folder, file)


def fresh(binary):
    """Exits when `binary` is the default build and a source is newer than it."""
    if os.path.realpath(binary) != os.path.realpath(DEFAULT):
        return
    if not os.path.exists(binary):
        raise SystemExit(f"{binary} is not built: cargo build --profile dist")
    built = os.path.getmtime(binary)
    newer = sorted(p for p in sources() if os.path.getmtime(p) > built)
    if newer:
        shown = os.path.relpath(newer[0], ROOT)
        more = f" and {len(newer) - 1} more" if len(newer) > 1 else ""
        raise SystemExit(f"{binary} is older than {shown}{more}: it is not the code checked out. "
                         "Run `cargo build --profile dist` first")
