"""The scorer process: MiniLM in a child process started at a lower CPU priority (nice +10),
so that when the machine's cores are busy the OS runs the server's event loop (Slack acks,
the API) first and scoring takes what is left. In the server's own process the model's
torch threads would compete with the event loop as equals.

The child loads the model once and answers encode requests over a socket, one at a time, in
the order they come. No scorer process outlives its server: it leaves when the scorer is
closed or the socket closes, and on Linux the kernel ends it the moment the server's
process ends in any way (killed, or re-raising SIGTERM after a graceful shutdown, as
uvicorn does), even in the middle of an encode. A child that dies, or does not answer a
request in time (stopped, wedged), is killed and started again once for the request it was
answering; failing twice on one request is an error that says so.
"""

from __future__ import annotations

import atexit
import ctypes
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Sequence
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from promptship.errors import Unavailable

log = logging.getLogger("promptship.scoring")

#: how much lower than the server the scorer process runs (``os.nice``)
NICE = 10
#: prctl(2): set the signal a process gets when its parent ends
PR_SET_PDEATHSIG = 1
#: how long a request may wait for the child's answer: this much, plus ``PER_TEXT`` a text
#: (generous: a busy machine runs the niced child last)
TIMEOUT = 60.0
PER_TEXT = 0.1


class ScorerProcess:
    """The parent's handle on the child: started on first use, one request at a time."""

    def __init__(
        self,
        model_path: str,
        *,
        batch_size: int,
        threads: int | None,
        nice: int = NICE,
        timeout: float = TIMEOUT,
        per_text: float = PER_TEXT,
    ) -> None:
        self.config = {
            "model_path": model_path,
            "batch_size": batch_size,
            "threads": threads,
            "nice": nice,
        }
        self.timeout = timeout
        self.per_text = per_text
        self.starts = 0  # each start loads the model once
        self._proc: subprocess.Popen[bytes] | None = None
        self._conn: Connection | None = None
        self._lock = threading.Lock()  # held for each start and each request
        self._closes = 0

    @property
    def pid(self) -> int | None:
        """The child's process id while it runs."""
        return self._proc.pid if self._proc is not None else None

    def start(self) -> None:
        """Start the child now and wait until it has loaded the model."""
        with self._lock:
            if self._proc is None:
                self._start()

    def encode(self, texts: Sequence[str]) -> tuple[np.ndarray, int]:
        """What ``Encoder.encode`` returns, computed in the child."""
        with self._lock:
            closes, retried = self._closes, False
            wait = self.timeout + self.per_text * len(texts)
            while True:
                if self._proc is None:
                    self._start()
                assert self._proc is not None and self._conn is not None
                # a stopped or wedged child is killed: the send or recv below then fails
                late = threading.Event()
                watchdog = threading.Timer(wait, _kill_late, (self._proc, late))
                watchdog.daemon = True
                watchdog.start()
                try:
                    self._conn.send(list(texts))
                    reply = self._conn.recv()
                    break
                except (EOFError, OSError):
                    _stop(watchdog)
                    code = self._reap()
                    if self._closes != closes:
                        raise Unavailable("the scorer was closed while it was encoding") from None
                    what = (
                        f"did not answer within {wait:.0f} s"
                        if late.is_set()
                        else f"ended (exit code {code})"
                    )
                    if retried:
                        raise Unavailable(
                            f"the scorer process {what} while encoding {len(texts)} texts, "
                            "and again when started anew for them"
                        ) from None
                    log.warning("the scorer process %s; starting it again", what)
                    retried = True
                finally:
                    _stop(watchdog)
            if late.is_set():  # it answered, but only as the watchdog killed it
                self._reap()
        if reply[0] == "error":
            raise Unavailable(f"the scorer process could not encode: {reply[1]}")
        return reply[1], reply[2]

    def close(self) -> None:
        """Stop the child now: an encode in progress is cut short (and fails saying so).
        A later request starts a new child."""
        self._closes += 1
        if not self._lock.acquire(blocking=False):  # an encode (or a start) is in progress
            proc = self._proc
            if proc is not None:
                proc.kill()
            self._lock.acquire()  # the request sees the child end, and lets go
        try:
            if self._conn is not None:
                try:
                    self._conn.send(None)  # please leave
                except OSError:
                    pass  # it has gone already
            self._reap()
        finally:
            self._lock.release()

    def _start(self) -> None:
        mine, theirs = socket.socketpair()
        try:
            config = json.dumps({**self.config, "parent": os.getpid()})
            # the child's imports (this very promptship) are found where ours were
            proc = subprocess.Popen(
                [sys.executable, "-c", _CHILD, json.dumps(sys.path), str(theirs.fileno()), config],
                pass_fds=[theirs.fileno()],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
            )
        except BaseException:
            mine.close()
            raise
        finally:
            theirs.close()  # only the child holds its end: our end sees EOF when it ends
        conn = Connection(mine.detach())
        self._proc, self._conn = proc, conn
        _running.add(self)
        try:
            reply = conn.recv()
        except (EOFError, OSError):
            code = self._reap()
            raise Unavailable(
                f"the scorer process ended (exit code {code}) before it loaded the model; "
                "its error is in the server's log"
            ) from None
        if reply[0] != "ready":
            self._reap()
            raise Unavailable(str(reply[1]))
        self.starts += 1

    def _reap(self) -> int | None:
        """Close our end and wait for the child to end (killing it if it does not)."""
        proc, conn = self._proc, self._conn
        self._proc = self._conn = None
        _running.discard(self)
        if conn is not None:
            conn.close()
        if proc is None:
            return None
        try:
            return proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait()


def _stop(watchdog: threading.Timer) -> None:
    """Stop a watchdog, and wait for it if it is firing now."""
    watchdog.cancel()
    watchdog.join()


def _kill_late(proc: subprocess.Popen[bytes], late: threading.Event) -> None:
    """The watchdog of a request the child did not answer in time."""
    late.set()
    proc.kill()


#: what the child runs: ``python -c _CHILD SYS_PATH FD CONFIG``
_CHILD = (
    "import json, sys; sys.path[:] = json.loads(sys.argv[1]); "
    "from promptship.validation.scorer_process import main; "
    "sys.exit(main(int(sys.argv[2]), json.loads(sys.argv[3])))"
)

#: handles with a child running, stopped when the interpreter exits
_running: set[ScorerProcess] = set()
_owner = os.getpid()


@atexit.register
def _stop_all() -> None:
    if os.getpid() != _owner:
        return  # a forked copy of the server: the children are the original's
    for handle in list(_running):
        handle.close()


def _usable_cores() -> int:
    affinity = getattr(os, "sched_getaffinity", None)  # Linux: the cores we may run on
    return len(affinity(0)) if affinity else os.cpu_count() or 1


def _end_with(parent: int) -> None:
    """Linux: have the kernel kill this process when the thread that started it ends (the
    scorer's worker thread, which lives as long as the server's process)."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return  # not Linux: the closed socket ends us, after the encode in progress
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # it ended before we asked
        os._exit(0)


def main(fd: int, config: dict[str, Any]) -> int:
    """The child: load the model, then answer requests until told to stop or orphaned."""
    _end_with(config["parent"])
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the server's to handle
    os.nice(config["nice"])
    conn = Connection(fd)
    from promptship.validation.encoder import Encoder

    encoder = Encoder(
        config["model_path"],
        batch_size=config["batch_size"],
        # torch's default is every core; say so, counting only the cores we may run on
        threads=config["threads"] or _usable_cores(),
    )
    try:
        encoder.load()
        ready: tuple[object, ...] = ("ready",)
    except Exception as exc:
        ready = ("failed", f"the scorer could not load the model at {encoder.model_path}: {exc}")
    try:
        conn.send(ready)
        while ready[0] == "ready":
            texts = conn.recv()
            if texts is None:
                break  # closed
            try:
                vectors, pieces = encoder.encode(texts)
                reply: tuple[object, ...] = ("ok", vectors, pieces)
            except Exception as exc:
                reply = ("error", f"{type(exc).__name__}: {exc}")
            conn.send(reply)
    except (EOFError, OSError):
        pass  # the server has gone
    return 0 if ready[0] == "ready" else 1
