"""Run every bench/bench_*.py in turn (each prints its own figures); exit 1 if any fails."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path


def main() -> int:
    here = Path(__file__).resolve().parent
    failed = []
    for script in sorted(here.glob("bench_*.py")):
        print(f"=== {script.name}", flush=True)
        start = time.perf_counter()
        status = subprocess.call([sys.executable, str(script), *sys.argv[1:2]], cwd=here.parent)
        print(
            f"=== {script.name}: exit {status}, {time.perf_counter() - start:.1f} s\n", flush=True
        )
        if status:
            failed.append(script.name)
    if failed:
        print("failed: " + ", ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
