"""Development stand-ins: the service runner, an OpenID provider and an SMS gateway.

None of them may run in production; each refuses to start there.
"""

from __future__ import annotations

import os
from collections.abc import Mapping


class ProductionRefusedError(RuntimeError):
    """A development stand-in was asked to start while APP_ENV or FLASK_ENV says production."""


def refuse_production(what: str, instead: str, environ: Mapping[str, str] | None = None) -> None:
    """Raise `ProductionRefusedError` when APP_ENV or FLASK_ENV is set to production."""
    env = os.environ if environ is None else environ
    for name in ("APP_ENV", "FLASK_ENV"):
        if env.get(name, "").strip().lower() in ("production", "prod"):
            raise ProductionRefusedError(
                f"{what} refuses to run with {name}={env[name]!r}; {instead}"
            )
