import sys

from bench.cli import main

if __name__ == "__main__":  # guarded: relspeed's worker processes (spawn) import this module again
    sys.exit(main())
