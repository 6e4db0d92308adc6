"""A clone without the test data: the tests that need none run, the rest are counted
loudly; in CI (CI=true) missing data is a failure."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import REPO_DIR

# A test of a hand-made file (no data) and one of the real XML files (needs the data).
SELECTION = ["tests/test_dataset.py", "-k", "malformed_pts and empty or documented_face_counts"]


def run_without_data(tmp_path, ci: str | None):
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["LANDMARKS_DATA"] = str(tmp_path / "no-data-here")
    if ci is not None:
        env["CI"] = ci
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *SELECTION],
                          cwd=REPO_DIR, env=env, capture_output=True, text=True, timeout=300)


def test_without_data_the_rest_runs_and_the_skips_are_counted_loudly(tmp_path):
    result = run_without_data(tmp_path, ci=None)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "1 passed, 1 skipped" in result.stdout
    assert "TEST DATA MISSING" in result.stdout
    assert (f"1 test was SKIPPED because the 300-W test data is not at {tmp_path / 'no-data-here'}"
            in result.stdout)
    assert "LANDMARKS_DATA=/path/to/data bash .ci/run" in result.stdout


def test_in_ci_missing_data_fails_the_run(tmp_path):
    result = run_without_data(tmp_path, ci="true")
    assert result.returncode == 1, result.stdout[-3000:]
    assert "1 passed" in result.stdout and "1 error" in result.stdout
    assert "test data missing: the landmark test data not found" in result.stdout
