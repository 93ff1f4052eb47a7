"""The console script `reproduce`, started as `bench` is (bench/launch.py: a Ctrl-C while loading exits 130)."""

from bench.launch import _launch


def main() -> int:
    return _launch("reproduce.cli", "reproduce")
