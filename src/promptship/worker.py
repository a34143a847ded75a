"""Names for the workers (processes, replicas) that claim runs, leases and ticks."""

from __future__ import annotations

import os
import socket
import uuid


def worker_id() -> str:
    """Unique per process start: host, pid and a random suffix (pids are reused)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
