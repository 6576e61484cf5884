"""PROMETHEUS_MULTIPROC_DIR: every process makes the directory it is given (an empty
`emptyDir` holds none; tests/test_k8s_rehearsal.py starts each process so), and one that cannot
stops at start with a message naming the variable, not a traceback from prometheus_client."""

from __future__ import annotations

import re

import pytest

from common.metrics import prepare_multiprocess_dir
from common.settings import ConfigError
from tests.production import assert_refused_readably, production_env, refusal

PROCESSES = ["web", "worker", "beat", "flower", "release"]


@pytest.mark.parametrize("process", PROCESSES)
def test_a_process_that_cannot_make_its_metrics_directory_says_so(process, database_url, idp):
    # Below a file: no user, root included, can make it.
    env = production_env(database_url, idp.issuer, PROMETHEUS_MULTIPROC_DIR="/dev/null/metrics")

    refused = refusal(process, env)

    assert_refused_readably(
        refused, "PROMETHEUS_MULTIPROC_DIR='/dev/null/metrics' cannot be created (Not a directory)"
    )


def test_an_empty_metrics_directory_setting_is_refused(database_url, idp):
    # prometheus_client would write its files into the working directory, the application's.
    env = production_env(database_url, idp.issuer, PROMETHEUS_MULTIPROC_DIR="")

    refused = refusal("worker", env)

    assert_refused_readably(refused, "PROMETHEUS_MULTIPROC_DIR is set but empty")


def test_the_metrics_directory_is_made_with_its_parents(tmp_path, monkeypatch):
    # What a process does at start when the variable names a directory not there yet.
    wanted = tmp_path / "empty-dir" / "metrics"
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(wanted))

    assert prepare_multiprocess_dir() == str(wanted)
    assert wanted.is_dir()
    assert prepare_multiprocess_dir() == str(wanted)  # there already: left as it is


@pytest.mark.parametrize(
    ("value", "reason"),
    [("/dev/null/metrics", "cannot be created (Not a directory)"), ("", "is set but empty")],
)
def test_a_metrics_directory_that_cannot_be_made_is_named(value, reason, monkeypatch):
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", value)

    with pytest.raises(ConfigError, match=re.escape(reason)) as refused:
        prepare_multiprocess_dir()

    assert "PROMETHEUS_MULTIPROC_DIR" in str(refused.value)


def test_without_the_variable_nothing_is_made(monkeypatch):
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)

    assert prepare_multiprocess_dir() is None
