"""The CI skip guard of tests/conftest.py: with MWAI_REQUIRE_ALL_TESTS=1 a skipped
test fails the run unless its node id is on ALLOWED_SKIPS; without it a skip is a
skip. Run as a real pytest subprocess on a tiny test directory whose conftest
takes the guard's hooks from tests/conftest.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

CONFTEST = '''
import tests.conftest as guard
from tests.conftest import pytest_make_collect_report, pytest_runtest_makereport

guard.ALLOWED_SKIPS["test_tiny.py::test_allowed"] = "needs a capability CI lacks"
'''

TESTS = {
    "test_tiny.py": '''
import pytest

@pytest.fixture
def unavailable():
    pytest.skip("no such tool here")

def test_runs():
    assert True

def test_skips():
    pytest.skip("cannot do it here")

@pytest.mark.skipif(True, reason="marked away")
def test_marked():
    assert False

def test_skips_in_a_fixture(unavailable):
    assert False

def test_allowed():
    pytest.skip("allow-listed")
''',
    "test_module.py": '''
import pytest
pytest.skip("the whole module", allow_module_level=True)
''',
}


def run_pytest(tmp_path: Path, required: str | None, target: str = "test_tiny.py"
               ) -> subprocess.CompletedProcess[str]:
    (tmp_path / "pytest.ini").write_text(
        "[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    (tmp_path / "conftest.py").write_text(CONFTEST)
    for name, text in TESTS.items():
        (tmp_path / name).write_text(text)
    env = {k: v for k, v in os.environ.items() if k != "MWAI_REQUIRE_ALL_TESTS"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    if required is not None:
        env["MWAI_REQUIRE_ALL_TESTS"] = required
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rA", "-q",
         "--rootdir", str(tmp_path), target],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


def outcomes(output: str) -> dict[str, str]:
    """test name -> PASSED/FAILED/ERROR from -rA's short summary."""
    found: dict[str, str] = {}
    for line in output.splitlines():
        word, _, rest = line.partition(" ")
        if word in ("PASSED", "FAILED", "ERROR") and "::" in rest:
            found[rest.split(" ")[0].split("::")[-1]] = word
    return found


@pytest.mark.parametrize("required", [None, "0"])
def test_without_the_variable_a_skip_is_a_skip(tmp_path: Path, required: str | None) -> None:
    done = run_pytest(tmp_path, required, target=".")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed, 5 skipped" in done.stdout, done.stdout


def test_with_the_variable_every_skip_not_allowed_fails_the_run(tmp_path: Path) -> None:
    done = run_pytest(tmp_path, "1")
    assert done.returncode == 1, done.stdout + done.stderr
    found = outcomes(done.stdout)
    # A skip in the test fails it; one in its setup (a fixture, a skipif mark) errors it.
    assert found == {"test_runs": "PASSED", "test_skips": "FAILED", "test_marked": "ERROR",
                     "test_skips_in_a_fixture": "ERROR"}, done.stdout
    skipped = [line for line in done.stdout.splitlines() if line.startswith("SKIPPED")]
    assert len(skipped) == 1 and skipped[0].endswith(": allow-listed"), done.stdout
    assert "was skipped (Skipped: cannot do it here), but MWAI_REQUIRE_ALL_TESTS=1" \
        in done.stdout, done.stdout
    assert "add the node id to ALLOWED_SKIPS" in done.stdout


def test_with_the_variable_a_module_skipped_at_collection_fails_the_run(
        tmp_path: Path) -> None:
    done = run_pytest(tmp_path, "1", target="test_module.py")
    assert done.returncode == 2, done.stdout + done.stderr  # interrupted: collection error
    assert "ERROR test_module.py" in done.stdout, done.stdout
    assert "was skipped (Skipped: the whole module)" in done.stdout, done.stdout
    assert run_pytest(tmp_path, None, target="test_module.py").returncode == 5  # no tests ran
