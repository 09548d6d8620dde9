"""Run every ratio benchmark (each in its own process) and refresh RESULTS.md.

Run: ``python benchmarks/run_all.py [NAME ...]`` where NAME is a script stem such as
``bench_retrieve``; without names, all ``bench_*.py`` scripts run.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(names: list[str]) -> int:
    scripts = sorted(HERE.glob("bench_*.py"))
    if names:
        scripts = [s for s in scripts if s.stem in names]
    failed = []
    for script in scripts:
        print(f"== {script.name}", flush=True)
        if subprocess.run([sys.executable, str(script)], cwd=HERE.parent).returncode != 0:
            failed.append(script.name)
    sys.path.insert(0, str(HERE))
    from benchlib import render_results_md

    print(f"summary: {render_results_md()}")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
