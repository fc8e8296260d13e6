"""`python -m ops.bench [--quick] [--out FILE]`; `configure` and `run` are the `ops bench` verb's."""

from __future__ import annotations

import sys

from ops.bench.cli import configure, main, run

__all__ = ["configure", "run"]

if __name__ == "__main__":
    sys.exit(main())
