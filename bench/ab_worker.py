"""One side of an A/B speed measurement, in a fresh process (run by bench/ab.py, not imported).

    python ab_worker.py TREE CALLS WARMUP MODULE:FUNCTION [MODULE:FUNCTION …]

TREE replaces this script's folder at the head of sys.path, so `bench` and `reproduce` are imported from the tree
under test (a reference commit's files, or the working tree), while the timing below is the same on both sides.
Each MODULE:FUNCTION returns (what it measures, one call); the call is timed CALLS times after WARMUP untimed
calls, by this process's CPU time (one torch thread: the parent sets OMP_NUM_THREADS=1), and the machine's load
around the timed calls is read for the parent to judge. Prints one JSON line.
"""

import importlib
import json
import os
import sys
import time
from importlib import metadata

tree = os.path.abspath(sys.argv[1])
sys.path[0] = tree


def clocks() -> dict:
    """Wall clock, this process's CPU time and /proc/stat's first line, for the parent to judge how busy the
    machine was meanwhile (bench/speed.py: MachineLoad.parse)."""
    stat = ""
    if os.path.exists("/proc/stat"):
        with open("/proc/stat") as f:
            stat = f.readline()
    return {"wall_s": time.perf_counter(), "own_cpu_s": time.process_time(), "stat": stat}


def measure(spec: str, calls: int, warmup: int) -> dict:
    module_name, function = spec.split(":")
    module = importlib.import_module(module_name)
    if not os.path.abspath(module.__file__).startswith(tree + os.sep):
        raise SystemExit(f"{module_name} was imported from {module.__file__}, not from the tree under test {tree}")
    if not hasattr(module, function):
        raise SystemExit(f"{spec} does not exist in {tree}: this code predates the A/B gate's workloads; "
                         "choose a later reference commit")
    if "torch" in sys.modules:  # OMP_NUM_THREADS=1 from the parent already did this; said again, before building
        sys.modules["torch"].set_num_threads(1)
    what, call = getattr(module, function)()
    for _ in range(warmup):
        call()
    cpu, wall, start = [], [], clocks()  # the load around the timed calls only: imports and building read files
    for _ in range(calls):
        start_cpu, start_wall = time.process_time(), time.perf_counter()
        call()
        cpu.append(time.process_time() - start_cpu)
        wall.append(time.perf_counter() - start_wall)
    return {"what": what, "cpu_s": cpu, "wall_s": wall, "load": [start, clocks()]}


def version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def main() -> None:
    calls, warmup = int(sys.argv[2]), int(sys.argv[3])
    results = {spec: measure(spec, calls, warmup) for spec in sys.argv[4:]}
    versions = {"python": sys.version.split()[0], **{p: version(p) for p in ("torch", "timm", "numpy")}}
    print(json.dumps({"tree": tree, "versions": versions, "results": results}))


main()
