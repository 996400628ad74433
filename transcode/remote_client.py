"""The origin's handle on a transcode worker on another host (docs/transcode-protocol.md): the same interface as
transcode/process.py WorkerProcess, over TCP. The remote keeps no files: every init and media segment it reports is
written here, into the origin's store and recording index, before the event is handed on.
"""
from __future__ import annotations

import asyncio
import logging
import time

from storage.local import LocalStore
from storage.store import StorageError, StorageFullError
from transcode.job import TranscodeJob, WorkerEvent
from transcode.process import EventHandler, WorkerGone, WorkerProcess
from transcode.remote_protocol import (MAX_LINE, PROTOCOL, ProtocolError, check_proof, line, new_nonce,
                                       parse_line, proof, read_secret)

log = logging.getLogger(__name__)


class RemoteUnavailable(WorkerGone):
    """The remote worker could not take the job: unreachable, wrong secret, busy."""


class RemotePool:
    """The configured worker boxes, taken in turn; a box that failed sits out `cooldown` seconds (with
    fallback_local the origin transcodes itself meanwhile)."""

    def __init__(self, addresses: list[str], secret: bytes, *, fallback_local: bool = True,
                 cooldown: float = 60.0, connect_timeout: float = 5.0) -> None:
        self.addresses = list(addresses)
        self.secret = secret
        self.fallback_local = fallback_local
        self.cooldown = cooldown
        self.connect_timeout = connect_timeout
        self._down_until: dict[str, float] = {}
        self._turn = 0

    @classmethod
    def from_settings(cls, addresses: list[str], secret_file: str, fallback_local: bool,
                      cooldown: float = 60.0) -> "RemotePool | None":
        """None when no remote is configured (transcode locally, the default)."""
        if not addresses:
            return None
        return cls(addresses, read_secret(secret_file), fallback_local=fallback_local, cooldown=cooldown)

    def candidates(self) -> list[str]:
        """Addresses to try, in turn order; boxes in their cooldown only when there is no local fallback."""
        now = time.monotonic()
        ordered = self.addresses[self._turn:] + self.addresses[:self._turn]
        self._turn = (self._turn + 1) % len(self.addresses)
        up = [a for a in ordered if self._down_until.get(a, 0.0) <= now]
        return up if up or self.fallback_local else ordered

    def mark_down(self, address: str, reason: str) -> None:
        log.warning("remote transcode worker %s: %s; not used for %.0f s", address, reason, self.cooldown)
        self._down_until[address] = time.monotonic() + self.cooldown


def split_address(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"a remote worker address is HOST:PORT, got {address!r}")
    return host.strip("[]"), int(port)


class RemoteWorkerProcess(WorkerProcess):
    """A WorkerProcess whose worker runs on a worker box (pid is None: no local process)."""

    def __init__(self, job: TranscodeJob, on_event: EventHandler, address: str, pool: RemotePool) -> None:
        super().__init__(job, on_event)
        self.address = address
        self._pool = pool
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task[None] | None = None
        self._gone = False       # the connection ended: writes fail from now on
        self._ended = False      # the worker reported "end": all renditions flushed
        self._finishing = False  # we closed our side: the connection ending is expected
        # Same reserve as a local worker's store: the origin's disk is the one that fills.
        self._store = LocalStore(job.store_root, job.reserve_bytes)

    async def start(self) -> None:
        host, port = split_address(self.address)
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port, limit=MAX_LINE), self._pool.connect_timeout)
            self._reader, self._writer = reader, writer
            job_id = await asyncio.wait_for(self._handshake(reader, writer), self._pool.connect_timeout)
        except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ProtocolError) as exc:
            self._close()
            raise RemoteUnavailable(f"remote worker {self.address}: {type(exc).__name__}: {exc}") from exc
        except RemoteUnavailable:
            self._close()
            raise
        log.info("stream %s: period %s transcodes on %s (job %s)", self.job.stream_id, self.job.period,
                 self.address, job_id)
        self._task = asyncio.create_task(self._read_events(), name=f"remote-worker-events-{self.job.stream_id}")
        self._readers = [self._task]

    async def _handshake(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> object:
        hello = parse_line(await reader.readuntil(b"\n"))
        if hello.get("protocol") != PROTOCOL or not isinstance(hello.get("nonce"), str):
            raise ProtocolError(f"not a {PROTOCOL} worker: {hello}")
        nonce = new_nonce()
        writer.write(line({"proof": proof(self._pool.secret, "client", hello["nonce"]), "nonce": nonce}))
        answer = parse_line(await reader.readuntil(b"\n"))
        if "error" in answer:
            raise RemoteUnavailable(f"remote worker {self.address} refused: {answer['error']}")
        if not check_proof(self._pool.secret, "server", nonce, answer.get("proof")):
            raise RemoteUnavailable(f"remote worker {self.address} does not know the shared secret")
        writer.write(self.job.to_json().encode() + b"\n")
        accepted = parse_line(await reader.readuntil(b"\n"))
        if not accepted.get("accepted"):
            raise RemoteUnavailable(f"remote worker {self.address} refused the job: {accepted.get('error')}")
        return accepted.get("job")

    async def write(self, data: bytes) -> None:
        writer = self._writer
        if writer is None or self._gone or writer.is_closing():
            raise WorkerGone(self.last_error or f"remote transcode worker {self.address} is gone")
        try:
            writer.write(data)
            await writer.drain()
        except (ConnectionError, OSError) as exc:
            raise WorkerGone(self.last_error or f"remote transcode worker {self.address}: {exc}") from exc

    async def finish(self, timeout: float = 60.0) -> int:
        """Half-close: the remote worker sees the end of its input, flushes, and closes the connection."""
        if self._writer is None:
            return 0
        self._finishing = True
        if not self._gone and not self._writer.is_closing() and self._writer.can_write_eof():
            try:
                self._writer.write_eof()
            except (ConnectionError, OSError):
                pass
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout)
            except TimeoutError:
                log.error("stream %s: remote worker %s did not finish in %.0f s; dropping it", self.job.stream_id,
                          self.address, timeout)
                self._close()
                await asyncio.gather(self._task, return_exceptions=True)
        self._close()
        return 0 if self._ended else 1

    def kill(self) -> None:
        self._finishing = True
        self._close()

    def _close(self) -> None:
        self._gone = True
        if self._writer is not None and not self._writer.is_closing():
            self._writer.transport.abort()

    async def _read_events(self) -> None:
        assert self._reader is not None
        try:
            await self._relay(self._reader)
        except (ConnectionError, OSError) as exc:
            self.last_error = self.last_error or f"remote worker {self.address}: {exc}"
        finally:
            self._gone = True
            if not self._ended and not self._finishing and self.retry:
                # Died mid-broadcast: the restart that follows should not pick this box again at once.
                self.last_error = self.last_error or f"lost the remote transcode worker {self.address}"
                self._pool.mark_down(self.address, f"lost mid-broadcast (stream {self.job.stream_id})")

    async def _relay(self, reader: asyncio.StreamReader) -> None:
        while True:
            raw = await reader.readline()
            if not raw or not raw.endswith(b"\n"):
                return
            try:
                event = WorkerEvent.parse(raw)
            except (ValueError, KeyError):
                log.warning("stream %s: unreadable remote worker output %r", self.job.stream_id, raw[:200])
                continue
            size = event.data.pop("bytes", None)
            if isinstance(size, int) and size >= 0:
                try:
                    event.payload = await reader.readexactly(size)
                except asyncio.IncompleteReadError:
                    log.warning("stream %s: remote worker output ended inside a %s payload", self.job.stream_id,
                                event.event)
                    return
            if event.event == "end":
                self._ended = True
            elif event.event == "error":
                self.last_error = str(event.data.get("message"))
                if event.data.get("retry") is False:
                    self.retry = False
            elif event.event in ("rendition", "segment"):
                stored = await asyncio.to_thread(self._keep, event, raw)
                if stored is not None:  # the store refused it: report as a local worker does
                    event = stored
            try:
                await self._on_event(event)
            except Exception:
                log.exception("stream %s: handling remote worker event %s", self.job.stream_id, event.event)

    def _keep(self, event: WorkerEvent, raw: bytes) -> WorkerEvent | None:
        """Store the payload at the event's key, then log the event's line in the recording index (the order a
        local worker keeps); a "warning" event to hand on instead of a segment the store refused."""
        key = str(event.data["init"] if event.event == "rendition" else event.data["key"])
        try:
            self._store.write(key, event.payload or b"")
        except StorageError as exc:
            log.error("stream %s: %s", self.job.stream_id, exc)
            if event.event == "rendition":
                return None  # the live edge still serves it from memory
            code = "disk_full" if isinstance(exc, StorageFullError) else "storage"
            return WorkerEvent("warning", {"code": code, "message": str(exc),
                                           "rendition": event.data.get("rendition")})
        index = self._store.path_for(f"{self.job.key_prefix}/index-{self.job.period}.jsonl")
        try:
            index.parent.mkdir(parents=True, exist_ok=True)
            with open(index, "ab") as f:
                f.write(raw)  # the worker's own line, byte for byte
        except OSError as exc:  # a full disk must not stop the live stream
            log.error("stream %s: cannot append to the recording index: %s", self.job.stream_id, exc)
        return None


async def start_worker_process(job: TranscodeJob, on_event: EventHandler, pool: RemotePool | None) -> WorkerProcess:
    """A running worker for this job: on a worker box when one is configured and answers, else local (or
    RemoteUnavailable when remote_fallback_local is off)."""
    if pool is not None:
        failure = "no remote transcode worker is available"
        for address in pool.candidates():
            remote = RemoteWorkerProcess(job, on_event, address, pool)
            try:
                await remote.start()
                return remote
            except RemoteUnavailable as exc:
                failure = str(exc)
                log.error("stream %s: %s", job.stream_id, exc)
                pool.mark_down(address, failure)
        if not pool.fallback_local:
            raise RemoteUnavailable(failure)
        log.warning("stream %s: transcoding on this server instead (remote_fallback_local)", job.stream_id)
    local = WorkerProcess(job, on_event)
    await local.start()
    return local
