"""`mediaserver serve --workers N`: the origin (this process: media, schedules, webhooks, the API) plus N-1 web
workers (child processes) sharing the HTTP port (SO_REUSEPORT: the kernel spreads connections over them).

A worker answers chat sockets and server-sent events itself and forwards everything else to the origin over a
Unix socket (web/origin_proxy.py); rooms and events cross processes through Redis (mediaserver/cluster/). A
worker that dies is started again; its viewers reconnect (the player and chat client do) to the others.
"""
from __future__ import annotations

import asyncio
import logging
import os
import sys
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

# Longest path a Unix socket address takes on Linux (sun_path is 108 bytes, one for the NUL).
MAX_SOCKET_PATH = 107
RESTART_DELAY = 1.0


def origin_socket_path(data_path: Path) -> str:
    """Where the origin listens for its workers: in the data folder when the path fits, else a private temp dir."""
    candidate = (data_path / "origin.sock").resolve()
    if len(str(candidate).encode()) <= MAX_SOCKET_PATH:
        return str(candidate)
    return str(Path(tempfile.mkdtemp(prefix="mediaserver-")) / "origin.sock")


def worker_command(argv: list[str], origin_socket: str, http_port: int, index: int) -> list[str]:
    """The child's command line: the parent's own options (same config), as a web worker on the port it got."""
    args = [a for a in argv]
    try:
        at = args.index("serve")
    except ValueError:
        raise ValueError("worker_command needs the `serve` command line") from None
    rest = _without_option(args[at + 1:], "--workers")
    rest = _without_option(rest, "--http-port")
    return [sys.executable, "-m", "mediaserver.cli", "web-worker", *rest, "--http-port", str(http_port),
            "--origin-socket", origin_socket, "--worker-index", str(index)]


def _without_option(args: list[str], name: str) -> list[str]:
    out: list[str] = []
    skip = False
    for a in args:
        if skip:
            skip = False
            continue
        if a == name:
            skip = True
            continue
        if a.startswith(name + "="):
            continue
        out.append(a)
    return out


class WorkerPool:
    """Starts the web workers and starts again any that exits while the origin runs."""

    def __init__(self, commands: list[list[str]]) -> None:
        self.commands = commands
        self.processes: list[asyncio.subprocess.Process | None] = [None] * len(commands)
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False

    async def start(self) -> None:
        for index in range(len(self.commands)):
            self._tasks.append(asyncio.get_running_loop().create_task(self._keep(index)))

    async def _keep(self, index: int) -> None:
        while not self._stopping:
            process = await asyncio.create_subprocess_exec(*self.commands[index], env=dict(os.environ))
            self.processes[index] = process
            log.info("web worker %d started (pid %d)", index + 1, process.pid)
            code = await process.wait()
            if self._stopping:
                return
            log.warning("web worker %d (pid %d) exited with %s; starting it again", index + 1, process.pid, code)
            await asyncio.sleep(RESTART_DELAY)

    async def stop(self) -> None:
        self._stopping = True
        for process in self.processes:
            if process is not None and process.returncode is None:
                process.terminate()
        for process in self.processes:
            if process is not None:
                try:
                    await asyncio.wait_for(process.wait(), 10)
                except asyncio.TimeoutError:
                    process.kill()
                    await process.wait()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
