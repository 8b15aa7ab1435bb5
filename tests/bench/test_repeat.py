"""bench/repeat.py: the medians recorded in bench/RESULTS.md come from every run's JSON line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPEAT = Path(__file__).resolve().parents[2] / "bench" / "repeat.py"


def test_repeat_reports_the_median_of_every_numeric_field(tmp_path):
    counter = tmp_path / "n"
    script = tmp_path / "fake_bench.py"
    script.write_text(
        "import json, pathlib\n"
        f"p = pathlib.Path({str(counter)!r})\n"
        "n = int(p.read_text()) + 1 if p.exists() else 1\n"
        "p.write_text(str(n))\n"
        "print('warming up')\n"
        "print(json.dumps({'bench': 'x', 'rate': [5.0, 1.0, 4.0, 2.0, 3.0][n - 1],"
        " 'nested': {'ms': 10 * n}, 'ok': True}))\n")
    runs = tmp_path / "runs.jsonl"
    done = subprocess.run([sys.executable, str(REPEAT), "--runs", "5", "--out", str(runs), "--",
                           sys.executable, str(script)], capture_output=True, text=True, check=True)
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["runs"] == 5
    assert summary["median"] == {"rate": 3.0, "nested.ms": 30.0}
    assert [line["rate"] for line in summary["lines"]] == [5.0, 1.0, 4.0, 2.0, 3.0]
    assert len(runs.read_text().splitlines()) == 5


def test_repeat_names_the_failing_run(tmp_path):
    script = tmp_path / "broken.py"
    script.write_text("import sys; sys.exit('no scene')\n")
    done = subprocess.run([sys.executable, str(REPEAT), "--runs", "2", "--", sys.executable, str(script)],
                          capture_output=True, text=True)
    assert done.returncode != 0
    assert "run 1 of" in done.stderr and "failed (exit 1)" in done.stderr and "no scene" in done.stderr
