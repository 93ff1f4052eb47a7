import sys

from bench.launch import reproduce

if __name__ == "__main__":  # guarded: worker processes started with "spawn" import this module again
    sys.exit(reproduce())
