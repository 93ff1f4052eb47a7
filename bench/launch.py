"""The console script `bench` (and `_launch`, which reproduce/launch.py uses): import the command's CLI, then run it.

A Ctrl-C while the libraries load (the first ~0.3 s: pandas, numpy) used to end in a KeyboardInterrupt traceback
and exit status -2, where one a second later exits 130 with one line (a hostile pass); here both read alike.
"""

import importlib
import sys


def bench() -> int:
    return _launch("bench.cli", "bench")


def _launch(module: str, name: str) -> int:
    try:
        main = importlib.import_module(module).main
    except KeyboardInterrupt:
        print(f"\n{name}: interrupted while starting; nothing was done", file=sys.stderr)
        return 130
    return main()
