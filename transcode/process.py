"""The server's handle on one transcode worker process: start it, stream FLV into it, read its events.

asyncio subprocess pipes give backpressure: a worker that falls behind slows the encoder's TCP stream.
"""
from __future__ import annotations

import asyncio
import logging
import os
import sys
from pathlib import Path
from typing import Awaitable, Callable

from transcode.job import TranscodeJob, WorkerEvent

log = logging.getLogger(__name__)

# The folder holding the transcode package, so the worker imports the same code as the server.
_CODE_ROOT = str(Path(__file__).resolve().parent.parent)


def _worker_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_CODE_ROOT, env.get("PYTHONPATH", "")) if p)
    return env

EventHandler = Callable[[WorkerEvent], Awaitable[None]]


class WorkerGone(RuntimeError):
    """The worker exited (or closed its input) while we were still sending media."""


class WorkerProcess:
    def __init__(self, job: TranscodeJob, on_event: EventHandler) -> None:
        self.job = job
        self._on_event = on_event
        self._proc: asyncio.subprocess.Process | None = None
        self._readers: list[asyncio.Task[None]] = []
        self.last_error: str | None = None
        # False once the worker reported an error that a restart can't fix (an unsupported codec).
        self.retry = True

    async def start(self) -> None:
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "transcode.worker", self.job.to_json(),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            limit=1 << 20,
            env=_worker_env(),
        )
        self._readers = [
            asyncio.create_task(self._read_events(), name=f"worker-events-{self.job.stream_id}"),
            asyncio.create_task(self._read_log(), name=f"worker-log-{self.job.stream_id}"),
        ]

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    async def write(self, data: bytes) -> None:
        proc = self._proc
        if proc is None or proc.stdin is None or proc.returncode is not None or proc.stdin.is_closing():
            raise WorkerGone(self.last_error or "transcode worker is not running")
        try:
            proc.stdin.write(data)
            await proc.stdin.drain()
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise WorkerGone(self.last_error or f"transcode worker stopped reading: {exc}") from exc

    async def finish(self, timeout: float = 60.0) -> int:
        """Close the input, let the worker flush its last segments, and wait for it."""
        proc = self._proc
        if proc is None:
            return 0
        if proc.stdin is not None and not proc.stdin.is_closing():
            try:
                proc.stdin.close()
                await proc.stdin.wait_closed()
            except (BrokenPipeError, ConnectionResetError):
                pass
        try:
            code = await asyncio.wait_for(proc.wait(), timeout)
        except asyncio.TimeoutError:
            log.error("stream %s: worker %s did not finish in %.0f s; killing it", self.job.stream_id, proc.pid, timeout)
            proc.kill()
            code = await proc.wait()
        # Events the worker printed before exiting must all be handled before we report.
        await asyncio.gather(*self._readers, return_exceptions=True)
        return code

    def kill(self) -> None:
        if self._proc is not None and self._proc.returncode is None:
            self._proc.kill()

    async def _read_events(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        while True:
            line = await self._proc.stdout.readline()
            if not line:
                return
            try:
                event = WorkerEvent.parse(line)
            except (ValueError, KeyError):
                log.warning("stream %s: unreadable worker output %r", self.job.stream_id, line[:200])
                continue
            size = event.data.pop("bytes", None)
            if isinstance(size, int) and size >= 0:
                try:
                    event.payload = await self._proc.stdout.readexactly(size)
                except asyncio.IncompleteReadError:
                    log.warning("stream %s: worker output ended inside a %s payload", self.job.stream_id, event.event)
                    return
            if event.event == "error":
                self.last_error = str(event.data.get("message"))
                if event.data.get("retry") is False:
                    self.retry = False
            try:
                await self._on_event(event)
            except Exception:
                log.exception("stream %s: handling worker event %s", self.job.stream_id, event.event)

    async def _read_log(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        while True:
            line = await self._proc.stderr.readline()
            if not line:
                return
            log.info("[worker %s] %s", self.job.stream_id, line.decode(errors="replace").rstrip())
