"""Run every benchmark ``bench/*.py`` (except this file), one after the other, each in its own process.

Each benchmark writes ``bench/results/<name>.json`` and prints its ratios; this runner passes their
output through and exits non-zero if any benchmark failed (after running all of them).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
DEADLINE_S = 1800  # per benchmark


def main() -> int:
    failed = []
    for script in sorted(BENCH.glob("*.py")):
        if script.name == Path(__file__).name or script.name.startswith("_"):
            continue
        print(f"== {script.name}", flush=True)
        t0 = time.monotonic()
        try:
            code = subprocess.run([sys.executable, str(script)], cwd=BENCH.parent, timeout=DEADLINE_S,
                                  check=False).returncode
        except subprocess.TimeoutExpired:
            code = "timeout"
        print(f"== {script.name}: {'ok' if code == 0 else f'FAILED ({code})'} in {time.monotonic() - t0:.0f} s",
              flush=True)
        if code != 0:
            failed.append(script.name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
