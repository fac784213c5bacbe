"""What the pytest leak check costs per test.

Writes a suite of N trivial tests and runs it in fresh pytest processes,
interleaved, three ways: the plugin removed (``-p no:mpguard``), installed
but off (the default), and on (``--mpguard-leaks=fail``).  Reports each
way's median wall time and the per-test overhead of "on" over "off":
(median on - median off) / N.

    python benchmarks/bench_leaks.py [--tests 500] [--rounds 7]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WAYS = {
    "removed (-p no:mpguard)": ["-p", "no:mpguard"],
    "installed, off": [],
    "on (--mpguard-leaks=fail)": ["--mpguard-leaks=fail"],
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tests", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "test_trivial.py"
        path.write_text(
            "import pytest\n\n"
            f"@pytest.mark.parametrize('n', range({args.tests}))\n"
            "def test_trivial(n):\n    assert n >= 0\n"
        )
        (Path(tmp) / "pytest.ini").write_text("[pytest]\n")
        times: dict[str, list[float]] = {way: [] for way in WAYS}
        for r in range(args.rounds + 1):  # round 0 warms the caches
            order = list(WAYS) if r % 2 else list(reversed(WAYS))
            for way in order:
                cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
                t0 = time.perf_counter()
                out = subprocess.run(
                    [*cmd, *WAYS[way], str(path)],
                    cwd=tmp,
                    capture_output=True,
                    text=True,
                    check=False,
                )
                elapsed = time.perf_counter() - t0
                if out.returncode != 0:
                    print(out.stdout[-2000:], out.stderr[-2000:], file=sys.stderr)
                    return 1
                if r:
                    times[way].append(elapsed)
    med = {way: statistics.median(ts) for way, ts in times.items()}
    py = sys.version.split()[0]
    print(f"{args.tests} trivial tests, {args.rounds} rounds, Python {py}")
    print(f"{'way':<28} {'median':>9} {'min..max':>17}")
    for way, ts in times.items():
        print(f"{way:<28} {med[way]:>8.3f}s {min(ts):>7.3f}..{max(ts):.3f}s")
    off, on = med["installed, off"], med["on (--mpguard-leaks=fail)"]
    removed = med["removed (-p no:mpguard)"]
    print(f"per-test overhead, on vs off: {(on - off) / args.tests * 1000:.3f} ms")
    cost = (off - removed) * 1000
    print(f"cost of the plugin installed but off: {cost:.1f} ms per run")
    return 0


if __name__ == "__main__":
    sys.exit(main())
