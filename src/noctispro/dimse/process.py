"""Entry point of one of several SCP processes sharing a port, and what they share.

Kept apart from `server` so that a spawned process can import it (and unpickle its
arguments) before Django is set up (importing `server` loads models).
"""

from __future__ import annotations

import multiprocessing
import signal
import threading


class AssociationSlots:
    """At most `limit` associations at once across the processes that share this object.

    A semaphore made by the parent and handed to each spawned SCP process. If a process
    dies holding slots, the parent stops the group and the group is restarted with a
    new one (dimse.server.serve_processes), so slots do not leak.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._semaphore = multiprocessing.get_context("spawn").BoundedSemaphore(limit)

    def try_acquire(self) -> bool:
        return bool(self._semaphore.acquire(block=False))

    def release(self) -> None:
        self._semaphore.release()


def serve_shared_port(slots: AssociationSlots) -> None:
    from noctispro.bootstrap import setup_django

    settings = setup_django()
    from noctispro.dimse.server import serve

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    serve(settings, stop, reuse_port=True, slots=slots)
