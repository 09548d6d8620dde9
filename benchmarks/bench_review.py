"""Clinician review through the real hub, in headless Chromium: time to first image and slice latency.

Runs the browser test ``tests/browser/test_review_e2e.py`` (Orthanc, JupyterHub with its proxy
and the platform API, the Voila worklist, a 200 × 256 × 256 synthetic CT case; a resident opens
it, scrolls, paints and proposes, an attending finalises) and keeps the timings it records:

* ``review_open_case_s``: from the click on "Open" in the worklist until the whole volume is in the
  browser (viewer.js's ``volumeAt``: every slice scrolls), in seconds; the slower of the resident's
  and the attending's open (the attending's also loads the resident's proposed labels). Goal ≤ 3 s.
  It includes claiming the case, reading the 200-slice series and the model SEG through the
  gateway, and sending the volume to the browser. The first drawn image (three preview planes)
  comes earlier: ``details.first_image_*``.
* ``review_slice_latency_p95_ms``: p95 over ≥ 60 slice changes (wheel, then keyboard, paced
  40 ms apart) of the time from the input event to the end of the draw in the next animation
  frame. Goal < 50 ms; one 60 Hz frame (17 ms) is the floor.

Run: ``python benchmarks/bench_review.py`` (about two minutes).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from benchlib import write_result  # noqa: E402

COMMAND = "python benchmarks/bench_review.py"


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        timings_file = Path(tmp) / "timings.json"
        env = {**os.environ, "MEDIMG_REVIEW_TIMINGS": str(timings_file)}
        test = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/browser/test_review_e2e.py"]
        if subprocess.run(test, cwd=REPO, env=env).returncode != 0 or not timings_file.exists():
            print("the review browser test failed; nothing measured", file=sys.stderr)
            return 1
        timings = json.loads(timings_file.read_text())
    opened = max(timings["open_case_s_resident"], timings["open_case_s_attending"])
    write_result("review_open_case_s", value=round(opened, 2), goal="<= 3", unit="s", command=COMMAND,
                 details={"resident_s": round(timings["open_case_s_resident"], 2),
                          "attending_s": round(timings["open_case_s_attending"], 2),
                          "first_image_resident_s": round(timings["first_image_s_resident"], 2),
                          "first_image_attending_s": round(timings["first_image_s_attending"], 2),
                          "ends": "the whole volume in the browser (viewer.js volumeAt), not the first image",
                          "series": "200 x 256 x 256 CT"})
    write_result("review_slice_latency_p95_ms", value=round(timings["slice_p95_ms"], 1), goal="< 50 ms", unit="ms",
                 command=COMMAND, details={"slice_changes": timings["slice_changes"],
                                           "median_ms": round(timings["slice_median_ms"], 1)})
    print(json.dumps(timings, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
