"""Serve an ASGI app on a free loopback port in a background thread (tests, benchmarks)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Literal, Protocol

import uvicorn
from starlette.types import ASGIApp

from promptship.serving import Server


def bind_loopback() -> socket.socket:
    """A listening socket on a free loopback port.

    Created with an explicit IPPROTO_TCP so asyncio sets TCP_NODELAY on accepted
    connections (it checks ``sock.proto``); without it every response waits ~40 ms on
    Nagle's algorithm and delayed ACKs.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


class ServerThread:
    """Serve an ASGI app with uvicorn on a free loopback port, in its own thread and loop:
    ``start``/``stop``, or ``with ServerThread(app) as served``. A request still in progress
    when it stops is cut after a second; later requests get connection refused."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        name: str = "promptship-server",
        lifespan: Literal["auto", "on", "off"] = "auto",
    ) -> None:
        self.app = app
        self.name = name
        self.lifespan = lifespan
        self.port = 0
        self._server: Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ServerThread:
        sock = bind_loopback()
        self.port = sock.getsockname()[1]
        server = self._server = Server(
            uvicorn.Config(
                self.app, log_level="warning", lifespan=self.lifespan, timeout_graceful_shutdown=1
            )
        )

        def run() -> None:
            asyncio.run(server.serve(sockets=[sock]))
            sock.close()

        thread = self._thread = threading.Thread(target=run, name=self.name, daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError(f"{self.name} did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        """Stop serving (again: nothing)."""
        server, thread, self._server, self._thread = self._server, self._thread, None, None
        if server is not None and thread is not None:
            server.should_exit = True
            thread.join(timeout=30)

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Startable(Protocol):
    @property
    def url(self) -> str: ...

    def stop(self) -> None: ...


def serve_until_signalled(start: Callable[[], Startable]) -> Startable:
    """Run a double as a process of its own (benchmarks): start it, print its base URL on
    the first line of stdout, serve until SIGINT or SIGTERM, stop it and return it."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    double = start()
    print(double.url, flush=True)
    signal.sigwait({signal.SIGINT, signal.SIGTERM})
    double.stop()
    return double


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServeProcess:
    """``promptship serve`` as a child process (tests and benchmarks of restarts and
    replicas): started, waited for until ``/readyz`` answers, killed or stopped."""

    def __init__(self, env: dict[str, str], log: str | os.PathLike[str]) -> None:
        import httpx

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(log, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "promptship.cli", "serve", "--port", str(self.port)],
            env={**os.environ, **env},
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"promptship serve exited with {self.proc.returncode}; see {log}"
                )
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError(f"promptship serve did not get ready; see {log}")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def kill(self) -> None:
        """SIGKILL: no shutdown, no lease released; what a crash looks like."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.log.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)
        if not self.log.closed:
            self.log.close()


class DoubleProcess:
    """A test double (``promptship.testing.model_double`` or ``slack_double``) in a child
    process of its own, as a remote service is: it does not share our GIL. The child prints
    its base URL first; what it prints when it stops (the Slack double's summary) is kept
    in ``output``."""

    def __init__(self, module: str, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", module, *args], stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None
        self.url = self.proc.stdout.readline().strip()
        if not self.url:
            raise RuntimeError(f"{module} did not start")
        self.output = ""

    def stop(self) -> str:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.output, _ = self.proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.output, _ = self.proc.communicate()
        return self.output or ""

    def __enter__(self) -> DoubleProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
