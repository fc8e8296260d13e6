"""What every benchmark report is made of: where results are written (RESULTS_DIR), what machine they
were measured on (`machine`), the statistics (`percentile`, `summary` of a sample as p50/p99/mean,
`ratio`), and the plain-text formatting (`ms`, aligned `table`s). Shared by the `pipeline` scenarios,
the `voices` benchmark and the command line, none of which imports another for these.
"""

from __future__ import annotations

import os
import platform
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        memory = subprocess.run(["free", "-h"], capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        memory = ""
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu,
        "memory": memory,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), linear between closest ranks (numpy's default)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summary(values: Sequence[float], prefix: str) -> dict[str, float]:
    return {
        f"{prefix}_p50_s": round(percentile(values, 50), 4),
        f"{prefix}_p99_s": round(percentile(values, 99), 4),
        f"{prefix}_mean_s": round(sum(values) / len(values), 4) if values else float("nan"),
    }


def ratio(a: float, b: float) -> float | None:
    return round(a / b, 2) if b else None


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(headers, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)
