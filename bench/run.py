"""`make bench`: the agent against the engine's own limit, on the project's local stack.

One LocalStack (private dockerd, registry, mosquitto) for every case; images are built,
pushed and loaded before any timing, so only the download case downloads. Each figure is
the median of several runs; each agent figure has its baseline measured in the same run.
Progress goes to stderr, the table (markdown) to stdout.

Environment: BENCH_REPEAT (default 5) runs per figure, BENCH_CASES (comma-separated case
names, default all: cli, identify, apply, start, change, noop, download, agent_download,
idle), BENCH_IDLE_OPS (operations of the RSS growth row, default 1000) and BENCH_IDLE_WARMUP
(operations before them, default 1000),
BENCH_ACTIVATION_WINDOW (seconds: measure only with that activation window; default: window
0 for every row, and the change and apply rows again with the agent's default), BENCH_RUNS=1
(each run's figure in the progress, not only the medians).
"""

from __future__ import annotations

import asyncio
import compileall
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import cases
from harness import Row, print_table, progress

from cua_dev.stack import LocalStack


def machine() -> str:
    cpu = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kib = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kib = int(line.split()[1])
    return f"{os.cpu_count()} CPUs ({cpu}), {mem_kib / 1024 / 1024:.1f} GiB RAM"


def compile_bytecode() -> None:
    """The agent's modules compiled to bytecode, as an installed agent has them (pip compiles
    a wheel's modules at install, `make install` too): the development venv's editable
    install leaves that to the first import, which does not write it when
    PYTHONDONTWRITEBYTECODE is set (this machine sets it), and each start would compile every
    module again (about 40 ms more here)."""
    import cua

    compileall.compile_dir(Path(cua.__file__).parent, quiet=1)


async def main() -> int:
    compile_bytecode()
    repeat = int(os.environ.get("BENCH_REPEAT", "5"))
    wanted = [c for c in os.environ.get("BENCH_CASES", "").split(",") if c]
    started = time.monotonic()
    rows: list[Row] = []
    with LocalStack() as stack, tempfile.TemporaryDirectory(prefix="cua-bench-") as tmp:
        progress(f"local stack up in {time.monotonic() - started:.1f} s")
        bench = cases.Bench(stack, Path(tmp), repeat)
        await bench.prepare()
        try:
            rows = await bench.run(wanted)
        finally:
            await bench.close()
        engine_version = bench.engine_version
    total = time.monotonic() - started
    print(f"Machine: {machine()}, dockerd {engine_version}; {repeat} runs per figure (median).")
    print()
    print_table(rows)
    print()
    print(f"Total bench time: {total:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
