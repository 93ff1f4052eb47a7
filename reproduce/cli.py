"""`reproduce`: train DeiT variants with the paper's recipe. Placeholder until the training issue (#4) lands."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    print("reproduce: training is not implemented yet (issue #4); `bench` measures size and speed today.",
          file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
