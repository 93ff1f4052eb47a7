import sys

from bench.launch import bench

if __name__ == "__main__":  # guarded: relspeed's worker processes (spawn) import this module again
    sys.exit(bench())
