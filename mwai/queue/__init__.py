"""The durable run queue in one SQLite file.

``store`` is its public API (``Store``), with the write path in ``writes`` (run by
the group-commit writer thread of ``writer``), the typed reads in ``reads``, the
named SQL and the migrations in ``schema`` (``sql/``) and the wall clock in
``clock``. ``health`` judges a snapshot of it; ``pool`` and ``processor`` are the
workers that claim runs and what they call for each one.
"""
