"""The release step, `python -m web.release` (the Procfile's `release`, the Kubernetes Job and
the init containers of every web and worker pod): runs started side by side, as a rollout
starts them, take turns on an advisory lock; each exits 0 and the schema is migrated once."""

from __future__ import annotations

import logging
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from alembic.script import ScriptDirectory

from tests.k8s_support import empty_database
from tests.production import PATIENCE_SECONDS, procfile, production_env
from web.release import LOCK_KEY, migrate

ROOT = Path(__file__).resolve().parent.parent
MIGRATIONS = ROOT / "migrations"
RUNS = 2


@pytest.fixture
def database() -> Iterator[str]:
    """An empty database of the test's own."""
    with empty_database() as url:
        yield url


def _waiting_for_the_lock(connection: psycopg.Connection) -> int:
    row = connection.execute(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    ).fetchone()
    return row[0]


def _release(env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["sh", "-c", f"exec {procfile()['release']}"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_concurrent_releases_take_turns_and_migrate_the_schema_once(database, idp):
    env = production_env(database, idp.issuer, LOG_LEVEL="INFO")
    heads = ScriptDirectory(str(MIGRATIONS)).get_heads()
    revisions = list(ScriptDirectory(str(MIGRATIONS)).walk_revisions())

    # The test holds the lock first, so both runs are sure to start before either migrates:
    # released together, they race for it as two pods of a rollout do.
    with psycopg.connect(database, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
        runs = [_release(env) for _ in range(RUNS)]
        deadline = time.monotonic() + PATIENCE_SECONDS
        while _waiting_for_the_lock(holder) < RUNS:
            assert all(run.poll() is None for run in runs), "a release ended without the lock"
            assert time.monotonic() < deadline, "the releases never waited for the lock"
            time.sleep(0.1)
        holder.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))
        outputs = [run.communicate(timeout=PATIENCE_SECONDS)[0] for run in runs]
        [(version,)] = holder.execute("SELECT version_num FROM alembic_version").fetchall()

    assert [run.returncode for run in runs] == [0] * RUNS, "\n".join(outputs)
    assert [version] == heads
    upgrades = re.findall(r"Running upgrade \S* ?-> (\w+)", "".join(outputs))
    assert sorted(upgrades) == sorted(revision.revision for revision in revisions)
    assert sum("another process is migrating" in output for output in outputs) == RUNS


@pytest.fixture
def migrated_app(database, make_app):
    """An app over `database`, migrated by the first pod's release (before the test: Alembic's
    logging setup would remove the handler that captures the test's log)."""
    app = make_app(database_url=database.replace("postgresql://", "postgresql+psycopg://", 1))
    migrate(app)
    return app


def test_a_release_waiting_for_the_lock_then_finds_the_schema_migrated(
    database, migrated_app, caplog
):
    # A second pod's release, in this process.
    waiting = threading.Thread(target=migrate, args=(migrated_app,))

    with psycopg.connect(database, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
        with caplog.at_level(logging.INFO, logger="web.release"):
            waiting.start()
            deadline = time.monotonic() + PATIENCE_SECONDS
            while _waiting_for_the_lock(holder) < 1:
                assert waiting.is_alive(), "it migrated without the lock"
                assert time.monotonic() < deadline, "it never waited for the lock"
                time.sleep(0.05)
        holder.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))
        waiting.join(timeout=PATIENCE_SECONDS)
        versions = holder.execute("SELECT version_num FROM alembic_version").fetchall()

    assert not waiting.is_alive()
    assert [version for (version,) in versions] == ScriptDirectory(str(MIGRATIONS)).get_heads()
    assert "another process is migrating the database; waiting for it" in caplog.messages
