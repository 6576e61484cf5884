"""gunicorn settings for the web process (`web: gunicorn --config gunicorn.conf.py ...`).

Deployment knobs come from the platform's environment: PORT, WEB_CONCURRENCY, WEB_THREADS.
"""

import gc
import os
import shutil
import tempfile
from pathlib import Path

# Metrics from every worker process are summed through files in this directory; it must be
# set before the app (and prometheus_client) is imported. common/metrics.py creates it.
if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
    # Ours alone: counters of a previous run on this host must not be added to this one's.
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(
        Path(tempfile.gettempdir()) / "order-service-metrics"
    )
    shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)

bind = f"{os.environ.get('HOST', '0.0.0.0')}:{os.environ.get('PORT', '5000')}"  # noqa: S104
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
# Threads overlap the waits on Postgres; the GIL makes more processes, not threads, the way
# to use more cores. gunicorn's gthread worker, whose threads a client sending its request a
# byte at a time cannot hold (web/slow_clients.py).
worker_class = "web.gunicorn_worker.ThreadWorker"
threads = int(os.environ.get("WEB_THREADS", "4"))
# Each worker listens on a socket of its own (SO_REUSEPORT) and the kernel spreads new
# connections across them. With one shared socket, the first worker to wake takes a burst of
# keep-alive connections and keeps them: under such a client, one core works, the other idles.
reuse_port = True
timeout = 30
graceful_timeout = 20
keepalive = 5
# Load the app once in the master: workers share its memory until they write to it.
preload_app = True
accesslog = "-"
# One JSON line per request, like the app's logs (see web/access_log.py).
logger_class = "web.access_log.JsonAccessLogger"
errorlog = "-"
# No runtime control socket: it would live under $HOME, read-only in containers.
control_socket_disable = True
# Which proxies' X-Forwarded-* to believe is the app's setting, TRUSTED_PROXIES (werkzeug's
# ProxyFix): gunicorn itself lets no peer's headers change the scheme or the environment, or
# a client on one of its forwarded_allow_ips (127.0.0.1 by default) could claim TLS.
secure_scheme_headers: dict[str, str] = {}
forwarder_headers = ""


def pre_fork(server, worker):
    """What the master loaded (the app, the schema, the mappers) is frozen out of the garbage
    collector: a worker's full collection then neither scans those objects nor writes to their
    pages, which stay shared with the master instead of being copied into every worker."""
    gc.freeze()


def pre_request(worker, req):
    """A request whose body is longer than the app takes is answered 413 without being read;
    its connection then closes (and the answer says `Connection: close`), so the client stops
    sending. Kept alive, the rest of the body would have to be read to reach the next request
    (gunicorn reads on for up to 64 KiB, then drops the connection mid-stream, after saying
    keep-alive). A chunked body's length shows only as it is read: the app refuses one once
    it has a byte past the limit (web/slow_clients.py), and the worker closes the connection
    after that answer (web/gunicorn_worker.py)."""
    limit = worker.wsgi.config.get("MAX_CONTENT_LENGTH")
    declared = next((value for name, value in req.headers if name == "CONTENT-LENGTH"), None)
    if limit is not None and declared is not None and int(declared) > limit:
        req.force_close()


def post_fork(server, worker):
    """Connections opened in the master must not be shared with the forked workers."""
    from models.db import db

    app = server.app.wsgi()
    with app.app_context():
        for engine in db.engines.values():
            engine.dispose(close=False)


def child_exit(server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
