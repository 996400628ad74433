"""The worker box's side of the remote transcode protocol (docs/transcode-protocol.md): an asyncio TCP server that
authenticates an origin, runs the ordinary `python -m transcode.worker` for its job and relays the bytes both ways.

Run by `mediaserver transcode-worker --listen HOST:PORT --secret-file PATH`.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from transcode.job import TranscodeJob
from transcode.process import _worker_env
from transcode.remote_protocol import (MAX_LINE, PROTOCOL, ProtocolError, check_proof, line, new_nonce,
                                       parse_line, proof)

log = logging.getLogger("transcode.remote_server")

CHUNK = 65536


@dataclass
class WorkerBoxSettings:
    secret: bytes
    scratch: Path
    max_jobs: int = 2
    handshake_timeout: float = 10.0  # seconds an origin has for each handshake line


class WorkerBox:
    """Accepts origins, one job per connection, at most max_jobs at a time."""

    def __init__(self, settings: WorkerBoxSettings) -> None:
        self.settings = settings
        self.running = 0
        self._ids = itertools.count(1)
        self._server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> int:
        """Listen; returns the bound port (port 0 picks a free one)."""
        self.settings.scratch.mkdir(parents=True, exist_ok=True)
        self._server = await asyncio.start_server(self._serve, host, port, limit=MAX_LINE)
        bound: int = self._server.sockets[0].getsockname()[1]
        return bound

    async def serve_forever(self) -> None:
        assert self._server is not None
        async with self._server:
            await self._server.serve_forever()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        number = next(self._ids)
        try:
            job = await self._handshake(reader, writer, peer)
            if job is None:
                return
            if self.running >= self.settings.max_jobs:
                log.warning("connection %s from %s: refused job for stream %s: %d jobs already running",
                            number, peer, job.stream_id, self.running)
                writer.write(line({"error": f"busy: this worker box runs {self.running} jobs "
                                            f"(--max-jobs {self.settings.max_jobs})", "code": "busy"}))
                await writer.drain()
                return
            self.running += 1
            try:
                await self._run_job(number, job, reader, writer, peer)
            finally:
                self.running -= 1
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError,
                ProtocolError, ValueError) as exc:
            log.warning("connection %s from %s: %s: %s", number, peer, type(exc).__name__, exc)
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except ConnectionError:
                pass

    async def _read_line(self, reader: asyncio.StreamReader) -> bytes:
        data = await asyncio.wait_for(reader.readuntil(b"\n"), self.settings.handshake_timeout)
        return data

    async def _handshake(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                         peer: object) -> TranscodeJob | None:
        nonce = new_nonce()
        writer.write(line({"protocol": PROTOCOL, "nonce": nonce}))
        await writer.drain()
        hello = parse_line(await self._read_line(reader))
        if not check_proof(self.settings.secret, "client", nonce, hello.get("proof")):
            log.warning("origin %s: authentication failed (wrong shared secret); connection closed", peer)
            writer.write(line({"error": "authentication failed", "code": "auth"}))
            await writer.drain()
            return None
        origin_nonce = hello.get("nonce")
        if not isinstance(origin_nonce, str) or len(origin_nonce) < 32:
            raise ProtocolError("the origin sent no nonce")
        writer.write(line({"proof": proof(self.settings.secret, "server", origin_nonce)}))
        await writer.drain()
        try:
            job = TranscodeJob.from_json((await self._read_line(reader)).decode())
        except (TypeError, KeyError, ValueError) as exc:
            writer.write(line({"error": f"bad job: {exc}", "code": "bad_job"}))
            await writer.drain()
            return None
        return job

    async def _run_job(self, number: int, job: TranscodeJob, reader: asyncio.StreamReader,
                       writer: asyncio.StreamWriter, peer: object) -> None:
        scratch = Path(tempfile.mkdtemp(prefix=f"job-{number}-", dir=self.settings.scratch))
        job.store_root = str(scratch)  # the origin's path means nothing here
        log.info("job %s: stream %s period %s from %s (%d rungs); scratch %s", number, job.stream_id, job.period,
                 peer, len(job.renditions), scratch)
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "transcode.worker", job.to_json(), "--no-store",
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                cwd=scratch, env=_worker_env())
        except OSError as exc:
            shutil.rmtree(scratch, ignore_errors=True)
            writer.write(line({"error": f"cannot start the worker: {exc}", "code": "spawn"}))
            await writer.drain()
            return
        writer.write(line({"accepted": True, "job": number, "pid": proc.pid}))
        await writer.drain()
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        stdin, stdout, stderr = proc.stdin, proc.stdout, proc.stderr

        async def media_in() -> None:
            """Origin -> worker stdin; EOF from the origin closes stdin (the worker flushes and ends)."""
            try:
                while chunk := await reader.read(CHUNK):
                    stdin.write(chunk)
                    await stdin.drain()
            except ConnectionError as exc:
                log.warning("job %s: origin connection lost: %s", number, exc)
                proc.kill()  # nobody is left to receive its output
            finally:
                if not stdin.is_closing():
                    stdin.close()

        async def events_out() -> None:
            """Worker stdout -> origin, byte for byte."""
            while chunk := await stdout.read(CHUNK):
                writer.write(chunk)
                await writer.drain()

        async def worker_log() -> None:
            while text := await stderr.readline():
                log.info("[job %s stream %s] %s", number, job.stream_id, text.decode(errors="replace").rstrip())

        feeder = asyncio.create_task(media_in())
        try:
            await asyncio.gather(events_out(), worker_log())
        except ConnectionError as exc:
            log.warning("job %s: origin connection lost: %s", number, exc)
            proc.kill()
        finally:
            code = await proc.wait()
            feeder.cancel()
            await asyncio.gather(feeder, return_exceptions=True)
            shutil.rmtree(scratch, ignore_errors=True)
            log.info("job %s: stream %s worker exited with %s", number, job.stream_id, code)


def parse_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"--listen wants HOST:PORT, got {value!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


async def run_worker_box(listen: str, settings: WorkerBoxSettings) -> None:
    host, port = parse_listen(listen)
    box = WorkerBox(settings)
    bound = await box.start(host, port)
    # Tests and service managers read this line to learn the port.
    log.info("transcode worker box listening on %s:%s (max %d jobs, scratch %s)", host, bound,
             settings.max_jobs, settings.scratch)
    await box.serve_forever()
