"""Entry point of one of several SCP processes sharing a port.

Kept apart from `server` so that a spawned process can import it before Django is
set up (importing `server` loads models).
"""

from __future__ import annotations

import signal
import threading


def serve_shared_port() -> None:
    from noctispro.bootstrap import setup_django

    settings = setup_django()
    from noctispro.dimse.server import serve

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    serve(settings, stop, reuse_port=True)
