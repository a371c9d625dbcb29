"""The throw-away PostgreSQL server of tests/pg_fixture.py, as a fixture of these tests."""

from pg_fixture import postgres  # noqa: F401
