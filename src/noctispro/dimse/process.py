"""Entry point of one of several SCP processes sharing a port, and what they share.

Kept apart from `server` so that a spawned process can import it (and unpickle its
arguments) before Django is set up (importing `server` loads models).
"""

from __future__ import annotations

import multiprocessing
import signal
import socket
import threading
from typing import Any


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


class LoadBoard:
    """How many connections each SCP process of a group is serving.

    The processes accept from one listening socket; every one of them wakes when a
    connection arrives, and one already serving more connections than another leaves
    it to the less busy one for a moment (`dimse.server.SharedListenerServer`). Python
    runs one thread at a time per process, so two associations in one process share a
    core while another process idles: the kernel's SO_REUSEPORT hashing put 3 or 4 of
    4 parallel associations on one of 2 processes half of the time.

    Each process writes only its own counter (`index`, set in the child); the others
    read it without a lock.
    """

    def __init__(self, processes: int) -> None:
        self._counts: Any = multiprocessing.get_context("spawn").RawArray("i", processes)
        self.index = -1
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        return {"_counts": self._counts, "index": self.index}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def opened(self) -> None:
        with self._lock:
            self._counts[self.index] += 1

    def closed(self) -> None:
        with self._lock:
            self._counts[self.index] -= 1

    def is_least_busy(self) -> bool:
        """No other process of the group serves fewer connections than this one."""
        counts = self._counts[:]
        return counts[self.index] <= min(counts)


def serve_shared_port(
    slots: AssociationSlots, board: LoadBoard, index: int, listeners: list[socket.socket]
) -> None:
    from noctispro.bootstrap import setup_django

    settings = setup_django()
    from noctispro.dimse.server import serve

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    board.index = index
    serve(settings, stop, listeners=listeners, board=board, slots=slots)
