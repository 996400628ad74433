"""RTMP ingest under a connection flood: sockets that never finish the handshake, from many loopback addresses
and from the encoder's own, must not keep a real encoder (PyAV, FFmpeg's RTMP client) from publishing."""
from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.sharedctypes
import multiprocessing.synchronize
import os
import resource
import socket
import subprocess
import threading
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ingest.rtmp import HARD_FACTOR, STAGE_CONNECTED, STAGE_HELLO, ConnectionSlots
from tests.media_source import start_publisher
from tests.server_fixture import run_server, small_config
from tests.test_rtmp_ingest import KEY, Keys, RawClient, RunningServer, check_media, wait_for

# Linux routes all of 127/8 to lo: attackers come from these, and some from 127.0.0.1 like the encoder.
ATTACKER_ADDRESSES = [f"127.0.0.{i}" for i in range(2, 21)]
C0C1 = b"\x03" + bytes(8) + os.urandom(1528)


@pytest.fixture(autouse=True)
def enough_file_descriptors() -> None:
    """Both ends of every attacker socket live in this process."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 4096 if hard == resource.RLIM_INFINITY else min(4096, hard)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def attack_socket(port: int, source: str, kind: int) -> socket.socket | None:
    """One connection that never publishes: kind 0 sends nothing, 1 half a C1, 2 C0+C1 and never C2."""
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=2, source_address=(source, 0))
        sock.sendall((b"", C0C1[:700], C0C1)[kind % 3])
    except OSError:
        return None  # refused or reset at once: the server is entitled to that
    sock.setblocking(False)
    return sock


def closed_by_server(sock: socket.socket) -> bool:
    """Reads what is there without waiting; True on EOF or reset."""
    try:
        while sock.recv(65536):
            pass
        return True
    except BlockingIOError:
        return False
    except OSError:
        return True


# -- the bookkeeping, sans-IO -------------------------------------------------------------------------------

def test_slots_close_the_oldest_of_the_full_group_and_forget_empty_addresses() -> None:
    slots: ConnectionSlots[str] = ConnectionSlots(max_publishers=1, max_pending=4, max_pending_per_address=2)
    assert slots.add_pending("a1", "A") == [] and slots.add_pending("a2", "A") == []
    displaced = slots.add_pending("a3", "A")
    assert [conn for conn, _ in displaced] == ["a1"] and "max_pending_per_address = 2" in displaced[0][1]
    assert slots.add_pending("b1", "B") == [] and slots.add_pending("c1", "C") == []
    displaced = slots.add_pending("d1", "D")  # 4 pending overall: the oldest anywhere goes
    assert [conn for conn, _ in displaced] == ["a2"] and "max_pending_connections = 4" in displaced[0][1]
    assert slots.claim_publisher("b1") and not slots.claim_publisher("c1")  # one publisher at a time
    assert slots.pending == 3 and slots.publishers == {"b1"}
    assert slots.add_pending("e1", "E") == []  # a publisher holds no pending slot
    for conn in ["a3", "c1", "d1", "e1", "b1", "never-added"]:
        slots.remove(conn)
    assert slots.pending == 0 and slots.addresses == 0 and not slots.publishers
    assert slots._pending == {} and slots._by_address == {}
    with pytest.raises(ValueError, match="max_pending_per_address must be at least 1, got 0"):
        ConnectionSlots(1, 1, 0)


def test_an_encoder_past_its_handshake_outlives_a_flood_from_its_own_address() -> None:
    """A church NAT: the flood and the encoder share an address; fresh sockets displace each other, not the
    encoder that is already through its handshake and connect command."""
    slots: ConnectionSlots[str] = ConnectionSlots(max_publishers=1, max_pending=100, max_pending_per_address=3)
    slots.add_pending("encoder", "NAT")
    slots.advance("encoder", STAGE_CONNECTED)
    displaced = []
    for n in range(50):
        displaced += [conn for conn, _ in slots.add_pending(f"flood{n}", "NAT")]
    assert "encoder" not in displaced and len(displaced) == 48
    assert slots.claim_publisher("encoder")
    # Among equals the oldest goes, as before; a connection never moves backwards.
    slots.advance("flood49", STAGE_HELLO)
    slots.advance("flood49", 0)
    assert slots.add_pending("late", "NAT") == []  # the encoder left the pending group when it published
    assert [c for c, _ in slots.add_pending("later", "NAT")] == ["flood48"]
    for conn in ["encoder", "flood49", "late", "later"]:
        slots.remove(conn)
    assert slots._stage == {} and slots.pending == 0


# -- real sockets against RtmpServer -----------------------------------------------------------------------

@pytest.fixture
def server() -> Iterator[RunningServer]:
    running = RunningServer(Keys(KEY), max_pending_connections=5, max_pending_per_address=3)
    yield running
    running.close()


def test_pending_per_address_closes_the_oldest_socket_and_bookkeeping_empties(
        server: RunningServer, caplog: pytest.LogCaptureFixture) -> None:
    rtmp, port = server.server, server.server.port
    opened: list[socket.socket] = []

    def admitted(sock: socket.socket) -> bool:
        name = "%s:%d" % sock.getsockname()

        async def check() -> bool:  # in the server's loop: its dicts are not read while they change
            return any(conn.peer == name for conn in rtmp._slots._pending)

        return bool(server.run(check()))

    def connect(source: str) -> socket.socket:
        sock = attack_socket(port, source, len(opened))
        assert sock is not None
        opened.append(sock)
        wait_for(lambda: admitted(sock), 5, "the server to take the connection")
        return sock

    a = [connect("127.0.0.2") for _ in range(3)]
    time.sleep(0.2)
    assert not any(closed_by_server(s) for s in a)
    a.append(connect("127.0.0.2"))  # a 4th from the address: its oldest goes, the newcomer stays
    wait_for(lambda: closed_by_server(a[0]), 5, "the oldest socket of 127.0.0.2 to be closed")
    b = [connect("127.0.0.3") for _ in range(2)]
    c = connect("127.0.0.4")  # 6 pending in all: the oldest anywhere (a[1]) goes
    wait_for(lambda: closed_by_server(a[1]), 5, "the oldest socket overall to be closed")
    time.sleep(0.2)
    assert not any(closed_by_server(s) for s in [a[2], a[3], *b, c])
    assert rtmp.pending_connections == 5 and rtmp.pending_addresses == 3
    evictions = [r.getMessage() for r in caplog.records if "closing to make room" in r.getMessage()]
    assert len(evictions) == 2, evictions
    assert "of 4 pending connections from 127.0.0.2, over max_pending_per_address = 3" in evictions[0]
    assert "of 6 pending connections, over max_pending_connections = 5" in evictions[1]

    for sock in opened:
        sock.close()
    wait_for(lambda: not rtmp._tasks, 5, "every connection to end")
    assert rtmp.pending_connections == 0 and rtmp.pending_addresses == 0 and rtmp.publishing_connections == 0
    assert rtmp._slots._pending == {} and rtmp._slots._by_address == {}


class ReconnectingAttacker(threading.Thread):
    """Keeps up to `hold` sockets open, opening `rate` new ones a second (closing its oldest past `hold`),
    round-robin over the attacker addresses and 127.0.0.1; stops by itself after `limit` seconds."""

    def __init__(self, port: int, *, rate: float, hold: int, limit: float, watch: Any = None) -> None:
        super().__init__(daemon=True)
        self.port, self.rate, self.hold, self.limit, self.watch = port, rate, hold, limit, watch
        self.stop = threading.Event()
        self.opened = self.closed_by_server = 0
        self.most_pending = 0

    def run(self) -> None:
        sources = ATTACKER_ADDRESSES + ["127.0.0.1"]
        held: deque[socket.socket] = deque()
        started = time.monotonic()
        try:
            while not self.stop.is_set() and time.monotonic() - started < self.limit:
                sock = attack_socket(self.port, sources[self.opened % len(sources)], self.opened)
                self.opened += 1
                if sock is not None:
                    held.append(sock)
                while len(held) > self.hold:
                    oldest = held.popleft()
                    self.closed_by_server += closed_by_server(oldest)
                    oldest.close()
                if self.watch is not None:
                    self.most_pending = max(self.most_pending, self.watch())
                self.stop.wait(max(0.0, started + self.opened / self.rate - time.monotonic()))
        finally:
            for sock in held:
                self.closed_by_server += closed_by_server(sock)
                sock.close()


@pytest.mark.media
def test_encoder_gets_in_while_an_attacker_keeps_reconnecting(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="ingest.rtmp")  # thousands of "closing to make room" lines
    keys = Keys(KEY, "sk_raw")
    server = RunningServer(keys)  # the defaults: 100 publishers, 64 pending, 8 per address, 10 s handshake
    attacker = ReconnectingAttacker(server.server.port, rate=250, hold=300, limit=25,
                                    watch=lambda: server.server.pending_connections)
    try:
        attacker.start()
        wait_for(lambda: attacker.opened >= 300, 10, "the attacker to hold 300 sockets")
        # OBS's command sequence from the attacker's own address, timed: handshake to NetStream.Publish.Start.
        raw_started = time.monotonic()
        raw = RawClient(server.server.port)
        raw.connect_and_publish("sk_raw")
        raw_publish_seconds = time.monotonic() - raw_started
        raw.command("deleteStream", 6, None, 1)
        assert raw.is_closed_by_server(5)
        raw.close()
        opened_before = attacker.opened
        spawned = time.monotonic()
        publisher = start_publisher(server.url(KEY), seconds=3.0)
        wait_for(lambda: len(keys.sinks) == 2 or publisher.finished, 20, "the publish to be accepted")
        accepted_after = time.monotonic() - spawned
        publisher.join(timeout=20)
        opened_during_publish = attacker.opened - opened_before
    finally:
        attacker.stop.set()
        attacker.join(10)
    try:
        assert publisher.error is None, publisher.error
        assert publisher.frames == 90
        assert keys.sinks[0].closes == ["encoder stopped publishing"]
        sink = keys.sinks[1]
        assert sink.closed.wait(5) and sink.closes == ["encoder stopped publishing"]
        check_media(sink, publisher.frames)
        print(f"\nattacker: {attacker.opened} connections ({opened_during_publish} during the PyAV publish), "
              f"{attacker.closed_by_server} closed by the server, at most {attacker.most_pending} pending; "
              f"raw publish took {raw_publish_seconds * 1000:.0f} ms; PyAV publish accepted {accepted_after:.2f} s "
              "after its process was started")
        assert opened_during_publish >= 500  # the attack went on through the whole publish
        assert attacker.closed_by_server >= attacker.opened - 300 - 64
        # Bounded: new connections get settle_time to send their first bytes, HARD_FACTOR times the limit at most.
        assert attacker.most_pending <= HARD_FACTOR * 64
        wait_for(lambda: not server.server._tasks, 5, "every connection to end")
        assert server.server.pending_connections == 0 and server.server.pending_addresses == 0
    finally:
        server.close()


# -- the whole server ------------------------------------------------------------------------------------

@pytest.mark.media
def test_1000_idle_sockets_do_not_keep_the_encoder_out(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="ingest.rtmp")
    handle = run_server(small_config(tmp_path / "data", handshake_timeout=10.0))
    rtmp = handle.server.rtmp
    attackers: list[socket.socket] = []
    try:
        stream = handle.create_stream()
        started = time.monotonic()
        for i in range(1000):  # 950 from 127.0.0.2-20, 50 from 127.0.0.1 (the encoder's address)
            source = "127.0.0.1" if i % 20 == 0 else ATTACKER_ADDRESSES[i % len(ATTACKER_ADDRESSES)]
            sock = attack_socket(handle.rtmp_port, source, i)
            if sock is not None:
                attackers.append(sock)
        flood_seconds = time.monotonic() - started
        settle = time.monotonic() + 10  # the server accepts the backlog and closes all but 64 (checked below)
        while (still_open := sum(not closed_by_server(s) for s in attackers)) > 64 and time.monotonic() < settle:
            time.sleep(0.1)
        pending, addresses = rtmp.pending_connections, rtmp.pending_addresses

        spawned = time.monotonic()
        publisher = start_publisher(handle.rtmp_url(stream["stream_key"]), seconds=4.0)

        def status() -> str:
            code, body = handle.api("GET", f"/api/streams/{stream['id']}")
            assert code == 200, body
            return str(body["status"])

        wait_for(lambda: status() in ("STARTING", "LIVE") or publisher.finished, 20, "STARTING")
        accepted_after = time.monotonic() - spawned
        wait_for(lambda: status() == "LIVE" or publisher.finished, 20, "LIVE")
        assert status() == "LIVE", publisher.error
        publisher.join(timeout=20)
        assert publisher.error is None, publisher.error
        assert publisher.frames == 120
        print(f"\n{len(attackers)} idle sockets opened in {flood_seconds:.2f} s, {still_open} left open "
              f"({pending} pending from {addresses} addresses); publish accepted (STARTING) "
              f"{accepted_after:.2f} s after its process was started")
        assert len(attackers) >= 990
        assert still_open <= 64 and pending == 64 and addresses <= 20

        # A second stack, the ffmpeg CLI's RTMP client, gets in past the same held-open sockets.
        second = handle.create_stream("Second Campus")
        ffmpeg = subprocess.Popen(
            ["ffmpeg", "-hide_banner", "-loglevel", "error", "-re",
             "-f", "lavfi", "-i", "testsrc2=size=320x180:rate=30", "-f", "lavfi", "-i", "sine=frequency=440",
             "-t", "4", "-c:v", "libx264", "-preset", "ultrafast", "-g", "30", "-pix_fmt", "yuv420p",
             "-c:a", "aac", "-f", "flv", handle.rtmp_url(second["stream_key"])],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            wait_for(lambda: handle.api("GET", f"/api/streams/{second['id']}")[1]["status"] == "LIVE"
                     or ffmpeg.poll() is not None, 30, "the ffmpeg CLI's broadcast LIVE")
            assert handle.api("GET", f"/api/streams/{second['id']}")[1]["status"] == "LIVE"
            _, err = ffmpeg.communicate(timeout=30)
            assert ffmpeg.returncode == 0, err.decode(errors="replace")
        finally:
            if ffmpeg.poll() is None:
                ffmpeg.kill()
    finally:
        for sock in attackers:
            sock.close()
        try:
            wait_for(lambda: not rtmp._tasks, 10, "every RTMP connection to end")
            assert rtmp.pending_connections == 0 and rtmp.pending_addresses == 0
            assert rtmp.publishing_connections == 0
        finally:
            handle.stop()


def _flood_from_loopback(port: int, stop: "multiprocessing.synchronize.Event", opened: "multiprocessing.sharedctypes.Synchronized[int]") -> None:
    """Opens idle sockets from 127.0.0.1 as fast as it can, holding the newest 300 (a process of its own, as a
    real attacker is: it doesn't share the server's interpreter)."""
    held: deque[socket.socket] = deque()
    deadline = time.monotonic() + 30  # bounded even if the test never says stop
    while not stop.is_set() and time.monotonic() < deadline:
        try:
            held.append(socket.create_connection(("127.0.0.1", port), timeout=1, source_address=("127.0.0.1", 0)))
            with opened.get_lock():
                opened.value += 1
        except OSError:
            continue
        if len(held) > 300:
            held.popleft().close()
    for sock in held:
        sock.close()


def test_encoders_get_in_under_a_fast_flood_from_their_own_address(caplog: pytest.LogCaptureFixture) -> None:
    """A flood from the encoder's own address (a church NAT) as fast as this machine can open sockets
    (~2,000/s here). Closing plain "oldest first" on arrival, 0 of 10 publishes got through. Now the least
    advanced go first, and only after new connections had settle_time to send their C0+C1, so an encoder is
    safe from its first bytes on. The window left is the encoder's own first milliseconds on a starved
    machine, hence "most", not "all"."""
    caplog.set_level(logging.CRITICAL, logger="ingest.rtmp")
    keys = Keys(KEY, *[f"sk_{n}" for n in range(10)])
    server = RunningServer(keys)
    port = server.server.port
    stop = multiprocessing.Event()
    opened = multiprocessing.Value("i", 0)
    flooder = multiprocessing.Process(target=_flood_from_loopback, args=(port, stop, opened), daemon=True)
    flooder.start()
    published = 0
    try:
        wait_for(lambda: opened.value >= 300, 10, "the flood to hold 300 sockets")
        started, opened_before = time.monotonic(), opened.value
        for n in range(10):
            raw = RawClient(port)
            try:
                raw.connect_and_publish(f"sk_{n}")
                published += 1
            except Exception:  # closed by the server to make room: this publish did not get in
                pass
            finally:
                raw.close()
        rate = (opened.value - opened_before) / (time.monotonic() - started)
    finally:
        stop.set()
        flooder.join(40)
        server.close()
    print(f"\n{published}/10 publishes got in during a flood of {rate:.0f} connections/s from their address")
    assert published >= 8
