"""The sample repository's test runner: ``python -m mwai.demo.sample_tests`` in a checkout.

The demo's check, so ``mwai demo`` needs no pytest: every ``test_*`` function of
``tests/test_*.py`` is called; a failure prints the test's frames and error. Exit 1 when any test
fails (or none is found).
"""

from __future__ import annotations

import importlib.util
import sys
import traceback
from pathlib import Path


def main() -> int:
    root = Path.cwd()
    sys.path.insert(0, str(root))
    passed = failed = 0
    for path in sorted((root / "tests").glob("test_*.py")):
        spec = importlib.util.spec_from_file_location(f"tests.{path.stem}", path)
        if spec is None or spec.loader is None:
            continue
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        for name, test in sorted(vars(module).items()):
            if not (name.startswith("test_") and callable(test)):
                continue
            try:
                test()
            except Exception as exc:
                failed += 1
                print(f"FAILED tests/{path.name}::{name}")
                # The test's own frames and the error, as pytest shows them.
                frames = exc.__traceback__.tb_next if exc.__traceback__ else None
                print("".join(traceback.format_tb(frames)), end="")
                print("".join(traceback.format_exception_only(exc)), end="")
            else:
                passed += 1
                print(f"passed tests/{path.name}::{name}")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed or not passed else 0


if __name__ == "__main__":
    sys.exit(main())
