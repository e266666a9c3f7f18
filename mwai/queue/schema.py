"""The queue's SQL: the named queries of ``sql/*.sql`` and the schema migrations.

Every statement the queue runs is here by name (``Q["claim"]``); nothing else in
mwai builds SQL. A file of ``sql/`` holds queries of one concern; a query starts
at a ``-- name: X`` line, and other comment lines are documentation, dropped.
``sql/migrations/NNNN_*.sql`` take the schema one version further each, and
``PRAGMA user_version`` records how far a database has come.
"""

from __future__ import annotations

import sqlite3
from importlib import resources

from mwai.errors import NotMwaiDatabase


def parse_queries(text: str, source: str) -> dict[str, str]:
    """The ``-- name:`` queries of one file, by name."""
    found: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        if line.startswith("-- name:"):
            found.append((line.split(":", 1)[1].strip(), []))
        elif found and not line.lstrip().startswith("--"):
            found[-1][1].append(line)
    queries: dict[str, str] = {}
    for name, lines in found:
        if name in queries:
            raise ValueError(f"{source}: query {name!r} is defined twice; rename one")
        queries[name] = "\n".join(lines).strip().rstrip(";")
    return queries


def _load_queries() -> dict[str, str]:
    folder = resources.files("mwai.queue").joinpath("sql")
    queries: dict[str, str] = {}
    for name in sorted(f.name for f in folder.iterdir() if f.name.endswith(".sql")):
        found = parse_queries(folder.joinpath(name).read_text(encoding="utf-8"), f"sql/{name}")
        twice = set(found) & set(queries)
        if twice:
            raise ValueError(f"sql/{name}: queries {sorted(twice)} are already defined in "
                             "another file of sql/; one name, one query")
        queries.update(found)
    return queries


def _load_migrations() -> list[str]:
    folder = resources.files("mwai.queue").joinpath("sql/migrations")
    files = sorted(f.name for f in folder.iterdir() if f.name.endswith(".sql"))
    return [folder.joinpath(name).read_text(encoding="utf-8") for name in files]


Q = _load_queries()
MIGRATIONS = _load_migrations()
SCHEMA_VERSION = len(MIGRATIONS)


def not_mwai(path: str) -> NotMwaiDatabase:
    return NotMwaiDatabase(
        f"{path} is a SQLite database but not a mwai one (no mwai schema); "
        "point --db / MWAI_DB at the mwai database"
    )


def migrate(conn: sqlite3.Connection, path: str) -> None:
    """Bring the schema to SCHEMA_VERSION, one transaction per migration."""
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if version == 0 and conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
        raise not_mwai(path)
    if version > SCHEMA_VERSION:
        raise NotMwaiDatabase(
            f"{path} has schema version {version}, newer than this mwai "
            f"({SCHEMA_VERSION}): upgrade mwai"
        )
    for number in range(version, SCHEMA_VERSION):
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in split_statements(MIGRATIONS[number]):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {number + 1}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise


def split_statements(script: str) -> list[str]:
    """Split a migration script into statements (sqlite3.complete_statement aware)."""
    statements: list[str] = []
    buffer = ""
    for line in script.splitlines(keepends=True):
        if line.lstrip().startswith("--") and not buffer.strip():
            continue
        buffer += line
        if sqlite3.complete_statement(buffer):
            statements.append(buffer.strip())
            buffer = ""
    if buffer.strip():
        statements.append(buffer.strip())
    return statements
