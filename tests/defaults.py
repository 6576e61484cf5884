"""What the service does when a variable is unset, for checking the files that write the
variables out (.env.example, the Kubernetes ConfigMap) against it."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from common.settings import _VARIABLES, Settings

ROOT = Path(__file__).resolve().parent.parent


def process_defaults() -> dict[str, str]:
    """The knobs that gunicorn.conf.py and the Procfile read themselves, with their defaults
    as written there (`os.environ.get('PORT', '5000')`, `${WORKER_CONCURRENCY:-32}`)."""
    gunicorn = (ROOT / "gunicorn.conf.py").read_text()
    procfile = (ROOT / "Procfile").read_text()
    found = dict(
        re.findall(r"""os\.environ\.get\(["']([A-Z_]+)["'], ["']([^"']*)["']\)""", gunicorn)
    )
    found |= dict(re.findall(r"\$\{([A-Z_]+):-([^}]*)\}", procfile))
    return found


def not_defaults(variables: Mapping[str, str | None]) -> dict[str, str]:
    """The variables set to something other than what the service does without them (an
    empty value is unset), and those the service does not know at all."""
    knobs = process_defaults()
    settings = {name for name, _, _ in _VARIABLES} | {"APP_ENV"}
    unset = Settings.from_env({})
    different = {}
    for name, value in variables.items():
        if not value:
            continue
        if name in knobs:
            same = value == knobs[name]
        elif name in settings:
            same = Settings.from_env({name: value}) == unset
        else:
            same = False
        if not same:
            different[name] = value
    return different
