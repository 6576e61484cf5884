"""gunicorn's access log as one JSON object per line, shaped like the app's own log lines.

gunicorn's own logger fills a table of every request header, response header and environ
variable for each request, so that `access_log_format` may name any of them; under load that
was about 5 % of a web worker's time, for the few fields this log carries. This one writes
those few, escaped as JSON (a path holding a quote stays one valid line). The path is logged
without its query string (the delivery callback carries its secret there), and masked as the
app's own lines are (`common.logs.scrub`).
"""

from __future__ import annotations

import json
import traceback
from datetime import UTC, datetime, timedelta
from typing import Any

from gunicorn.glogging import Logger

from common.logs import scrub
from web.request_ids import REQUEST_ID_HEADER

_REQUEST_ID = REQUEST_ID_HEADER.lower()


class JsonAccessLogger(Logger):
    """gunicorn's logger (`logger_class`), with an access line of a few JSON fields."""

    def access(self, resp: Any, req: Any, environ: dict, request_time: timedelta) -> None:
        if not self.access_log_enabled:
            return
        try:
            self.access_log.info(access_line(resp, environ, request_time))
        except Exception:
            self.error(traceback.format_exc())


def access_line(resp: Any, environ: dict, request_time: timedelta) -> str:
    """The JSON line for one answered request."""
    request_id = next((value for name, value in resp.headers if name.lower() == _REQUEST_ID), None)
    # A response gunicorn makes itself (a malformed request, say) has no status_code.
    status = getattr(resp, "status_code", None) or int(str(resp.status).split(None, 1)[0])
    return json.dumps(
        {
            "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "level": "INFO",
            "logger": "gunicorn.access",
            # Masked as every log line is: a path may hold a phone number or a token.
            "message": scrub(
                f"{environ.get('REQUEST_METHOD')} {environ.get('PATH_INFO')} {status}"
            ),
            "status": status,
            "duration_ms": round(request_time.total_seconds() * 1000, 1),
            "request_id": request_id,
            # The client's address as the app saw it: behind TRUSTED_PROXIES proxies, the one
            # the outermost of them saw connect (ProxyFix rewrote this same environment).
            "client": environ.get("REMOTE_ADDR"),
        }
    )
