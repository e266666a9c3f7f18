"""Issue 19, point 4: another program's database is never written.

Every command that opens the database (the service, `enqueue`, the actions and
the read-only views) identifies the file through a read-only connection first;
a foreign SQLite file is refused with its bytes unchanged and no -wal / -shm
file created next to it.
"""

from __future__ import annotations

import hashlib
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.acceptance.service import free_port, service_env

pytestmark = pytest.mark.slow

COMMANDS = [
    ["serve"],
    ["enqueue", "PROJ-1"],
    ["runs"],
    ["show", "1"],
    ["stats"],
    ["requeue", "1"],
    ["cancel", "1"],
    ["unlock"],
    ["prune", "--older-than", "30d"],
    ["check"],
]


def foreign_database(path: Path, user_version: int) -> str:
    """A small SQLite file of another program (rollback journal, as most are)."""
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE notes (body TEXT)")
    conn.execute("INSERT INTO notes VALUES ('keep me')")
    conn.execute(f"PRAGMA user_version = {user_version}")
    conn.commit()
    conn.close()
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("user_version", [0, 1])
def test_every_command_refuses_a_foreign_database_without_writing_it(
        tmp_path: Path, user_version: int) -> None:
    # user_version 1: the other program numbers its own schema, as mwai does.
    path = tmp_path / "other.db"
    digest = foreign_database(path, user_version)
    env = service_env(path, free_port())
    for command in COMMANDS:
        result = subprocess.run([sys.executable, "-m", "mwai", *command], env=env,
                                capture_output=True, text=True, timeout=60, check=False)
        assert result.returncode != 0, (command, result.stdout, result.stderr)
        assert "not a mwai" in result.stdout + result.stderr, (command, result.stdout,
                                                               result.stderr)
        assert "Traceback" not in result.stderr, (command, result.stderr)
        assert hashlib.sha256(path.read_bytes()).hexdigest() == digest, command
        assert sorted(p.name for p in tmp_path.iterdir()) == ["other.db"], command
