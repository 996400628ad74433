"""An HLS client for benchmarks: a tolerant playlist parser (RFC 8216bis, unknown tags kept) and a client
that follows one media playlist as a player would (standard polling, or LL-HLS blocking reloads and preload
hints), noting when each download completed. Used by bench/latency.py."""
from __future__ import annotations

import asyncio
import time
import urllib.parse
from dataclasses import dataclass, field
import aiohttp

from tests.hls_reader import parse_attributes  # the same attribute-list reader the tests use

# Seconds from a part's first byte to its last on loopback above which it was sent as it was written.
STREAMED = 0.03

# -- playlists (RFC 8216bis; unknown tags are kept, not refused) -------------------------------------------
def parse_byterange(text: str, previous_end: int) -> tuple[int, int]:
    """'length[@offset]' -> (offset, length); no offset: right after the previous sub-range of the same URI."""
    length, _, offset = text.partition("@")
    return (int(offset) if offset else previous_end), int(length)


@dataclass
class Part:
    msn: int
    index: int
    uri: str
    duration: float
    independent: bool
    byterange: tuple[int, int] | None  # (offset, length)
    map_uri: str


@dataclass
class Segment:
    msn: int
    uri: str
    duration: float
    map_uri: str
    byterange: tuple[int, int] | None
    parts: list[Part]


@dataclass
class Hint:
    type: str
    uri: str
    start: int | None
    length: int | None


@dataclass
class Playlist:
    target_duration: float = 0.0
    media_sequence: int = 0
    part_target: float | None = None
    server_control: dict[str, str] = field(default_factory=dict)
    segments: list[Segment] = field(default_factory=list)
    open_parts: list[Part] = field(default_factory=list)  # parts after the last EXTINF: segment next_msn
    hints: list[Hint] = field(default_factory=list)
    ended: bool = False
    skipped: int = 0
    other_tags: set[str] = field(default_factory=set)

    @property
    def next_msn(self) -> int:
        """Media sequence number of the segment after the last complete one (the one open_parts belong to)."""
        return self.media_sequence + self.skipped + len(self.segments)

    @property
    def can_block(self) -> bool:
        return self.server_control.get("CAN-BLOCK-RELOAD") == "YES"

    def segment(self, msn: int) -> Segment | None:
        i = msn - self.media_sequence - self.skipped
        return self.segments[i] if 0 <= i < len(self.segments) else None

    def parts_of(self, msn: int) -> list[Part]:
        if msn == self.next_msn:
            return self.open_parts
        segment = self.segment(msn)
        return segment.parts if segment else []

    def part(self, msn: int, index: int) -> Part | None:
        parts = self.parts_of(msn)
        return parts[index] if 0 <= index < len(parts) else None

    def all_parts(self) -> list[Part]:
        return [p for s in self.segments for p in s.parts] + self.open_parts


def parse_playlist(text: str) -> Playlist:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines or lines[0] != "#EXTM3U":
        raise ValueError(f"not a playlist: {text[:60]!r}")
    pl = Playlist()
    map_uri, duration, byterange = "", None, None
    parts: list[Part] = []
    range_end: dict[str, int] = {}
    for line in lines[1:]:
        if not line.startswith("#"):
            if duration is None:
                raise ValueError(f"segment URI without EXTINF: {line!r}")
            msn = pl.media_sequence + pl.skipped + len(pl.segments)
            br = None
            if byterange is not None:
                br = parse_byterange(byterange, range_end.get(line, 0))
                range_end[line] = br[0] + br[1]
            pl.segments.append(Segment(msn, line, duration, map_uri, br, parts))
            duration, byterange, parts = None, None, []
            continue
        tag, _, value = line.partition(":")
        if tag == "#EXTINF":
            duration = float(value.split(",")[0])
        elif tag == "#EXT-X-TARGETDURATION":
            pl.target_duration = float(value)
        elif tag == "#EXT-X-MEDIA-SEQUENCE":
            pl.media_sequence = int(value)
        elif tag == "#EXT-X-BYTERANGE":
            byterange = value
        elif tag == "#EXT-X-MAP":
            map_uri = parse_attributes(value)["URI"]
        elif tag == "#EXT-X-PART-INF":
            pl.part_target = float(parse_attributes(value)["PART-TARGET"])
        elif tag == "#EXT-X-SERVER-CONTROL":
            pl.server_control = parse_attributes(value)
        elif tag == "#EXT-X-SKIP":
            pl.skipped = int(parse_attributes(value)["SKIPPED-SEGMENTS"])
        elif tag == "#EXT-X-ENDLIST":
            pl.ended = True
        elif tag == "#EXT-X-PART":
            a = parse_attributes(value)
            uri, br = a["URI"], None
            if "BYTERANGE" in a:
                br = parse_byterange(a["BYTERANGE"], range_end.get(uri, 0))
                range_end[uri] = br[0] + br[1]
            msn = pl.media_sequence + pl.skipped + len(pl.segments)
            parts.append(Part(msn, len(parts), uri, float(a["DURATION"]), a.get("INDEPENDENT") == "YES", br,
                              map_uri))
        elif tag == "#EXT-X-PRELOAD-HINT":
            a = parse_attributes(value)
            start = a.get("BYTERANGE-START")
            length = a.get("BYTERANGE-LENGTH")
            pl.hints.append(Hint(a.get("TYPE", ""), a["URI"], int(start) if start is not None else None,
                                 int(length) if length is not None else None))
        else:
            pl.other_tags.add(tag)
    pl.open_parts = parts
    return pl


def spec_problems(pl: Playlist, low_latency: bool) -> list[str]:
    """What in one playlist goes against RFC 8216bis (the rules a client can check from the text alone)."""
    problems = []
    parts = pl.all_parts()
    if parts and pl.part_target is None:
        problems.append("EXT-X-PART without EXT-X-PART-INF (4.4.3.7: REQUIRED when the playlist has EXT-X-PART)")
    if pl.part_target is not None:
        hold = pl.server_control.get("PART-HOLD-BACK")
        if hold is None:
            problems.append("EXT-X-PART-INF without PART-HOLD-BACK in EXT-X-SERVER-CONTROL (4.4.3.8: REQUIRED)")
        elif float(hold) < 2 * pl.part_target:
            problems.append(f"PART-HOLD-BACK={hold} is under twice PART-TARGET={pl.part_target} (4.4.3.8: MUST be "
                            "at least twice)")
        for p in parts:
            if p.duration > pl.part_target + 1e-3:
                problems.append(f"part {p.msn}.{p.index} {p.uri} DURATION={p.duration} exceeds PART-TARGET="
                                f"{pl.part_target} (4.4.4.9: MUST be less than or equal)")
                break
        for s in pl.segments:
            if s.parts and abs(sum(p.duration for p in s.parts) - s.duration) > 0.05:
                problems.append(f"segment {s.msn}: EXTINF {s.duration} but its parts sum to "
                                f"{sum(p.duration for p in s.parts):.3f}")
                break
    if low_latency and not parts:
        problems.append("low_latency stream's playlist has no EXT-X-PART")
    if low_latency and not pl.can_block:
        problems.append("low_latency stream's playlist lacks EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES")
    for s in pl.segments:
        if s.parts and not s.parts[0].independent:
            problems.append(f"segment {s.msn}'s first part {s.parts[0].uri} lacks INDEPENDENT=YES (4.4.4.9: SHOULD "
                            "be present on a part holding an IDR; every segment starts with one here)")
            break
    if len([h for h in pl.hints if h.type == "PART"]) > 1:
        problems.append("more than one EXT-X-PRELOAD-HINT TYPE=PART (6.2.6: SHOULD NOT)")
    return problems


# -- the HLS client -----------------------------------------------------------------------------------------
@dataclass
class Fetched:
    url: str
    status: int
    body: bytes
    started: float
    first_byte_at: float
    done_at: float
    arrivals: list[tuple[int, float]]  # (bytes received so far, time.time()) per chunk


async def fetch(session: aiohttp.ClientSession, url: str, byterange: tuple[int, int | None] | None = None,
                timeout: float = 20.0) -> Fetched:
    """GET url (a Range of (offset, length or None for open-ended)); notes when each chunk arrived."""
    headers = {}
    if byterange is not None:
        offset, length = byterange
        headers["Range"] = f"bytes={offset}-" + ("" if length is None else str(offset + length - 1))
    started = time.time()
    chunks, arrivals, received, first = [], [], 0, 0.0
    async with session.get(url, headers=headers, timeout=aiohttp.ClientTimeout(total=timeout)) as response:
        async for chunk in response.content.iter_any():
            now = time.time()
            first = first or now
            received += len(chunk)
            chunks.append(chunk)
            arrivals.append((received, now))
        done = time.time()
        return Fetched(url, response.status, b"".join(chunks), started, first or done, done, arrivals)


@dataclass
class Piece:
    """A downloaded segment or part."""
    msn: int
    index: int        # part index; -1 for a whole segment
    map_url: str
    data: bytes
    done_at: float    # time.time() when its last byte had arrived
    via: str          # "segment", "part", "hint" (requested from an EXT-X-PRELOAD-HINT before it was listed)
    arrivals: list[tuple[int, float]]  # (bytes of data received so far, time.time()) per chunk read


@dataclass
class ClientLog:
    playlist_url: str
    mode: str
    pieces: list[Piece] = field(default_factory=list)
    inits: dict[str, bytes] = field(default_factory=dict)
    reloads: list[float] = field(default_factory=list)    # seconds each (blocking) reload took
    problems: dict[str, int] = field(default_factory=dict)  # against the spec, or failures; counted
    first_problem: dict[str, str] = field(default_factory=dict)
    hints_requested: int = 0
    hints_used: int = 0
    hint_holds: list[float] = field(default_factory=list)  # request sent -> last byte, for parts taken from a hint
    hint_spreads: list[float] = field(default_factory=list)  # first byte -> last byte of those
    segments_for_lost_parts: int = 0
    first_playlist: str = ""
    last_playlist: str = ""

    def problem(self, kind: str, detail: str) -> None:
        self.problems[kind] = self.problems.get(kind, 0) + 1
        self.first_problem.setdefault(kind, detail)


class HlsClient:
    """Follows one media playlist from its live edge and downloads what it lists, noting when each download
    ended. Standard: whole segments. LL: parts, with blocking reloads and preload hints."""

    def __init__(self, session: aiohttp.ClientSession, playlist_url: str, mode: str, poll: float) -> None:
        self.session, self.url, self.mode, self.poll = session, playlist_url, mode, poll
        self.log = ClientLog(playlist_url, mode)
        self.hinted: dict[tuple[str, int | None], asyncio.Task[Fetched]] = {}
        self.hints_done: set[tuple[str, int | None]] = set()
        self.start: tuple[int, int] | None = None  # LL: the first part we take
        self.listed: set[str] = set()  # every part URL a playlist has listed

    def abs(self, uri: str) -> str:
        return urllib.parse.urljoin(self.url, uri)

    async def reload(self, msn: int | None = None, part: int | None = None) -> Playlist | None:
        url = self.url
        if msn is not None:
            query = {"_HLS_msn": str(msn)} | ({} if part is None else {"_HLS_part": str(part)})
            url += ("&" if "?" in url else "?") + urllib.parse.urlencode(query)
        try:
            got = await fetch(self.session, url)
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            self.log.problem("playlist request failed", f"GET {url}: {type(exc).__name__} {exc}")
            return None
        if got.status != 200:
            self.log.problem(f"playlist HTTP {got.status}", f"GET {url} -> {got.status} {got.body[:200]!r}")
            return None
        try:
            pl = parse_playlist(got.body.decode())
        except (ValueError, KeyError, UnicodeDecodeError) as exc:
            self.log.problem("unparsable playlist", f"GET {url}: {exc}")
            return None
        if msn is not None:
            self.log.reloads.append(got.done_at - got.started)
            if not pl.ended and not self._satisfies(pl, msn, part):
                self.log.problem("blocking reload answered early",
                                 f"GET {url} answered after {got.done_at - got.started:.3f} s without segment {msn}"
                                 + ("" if part is None else f" part {part}") + " or later (6.2.5.2: the server MUST "
                                 f"defer responding until the playlist contains it); last lines: "
                                 f"{' | '.join(got.body.decode().splitlines()[-4:])}")
        for problem in spec_problems(pl, self.mode == "ll"):
            self.log.problem(problem.split(" (")[0][:60], f"GET {url}: {problem}")
        self.log.first_playlist = self.log.first_playlist or got.body.decode()
        self.log.last_playlist = got.body.decode()
        self.listed.update(self.abs(p.uri) for p in pl.all_parts())
        if self.mode == "ll" and self.start is not None:
            self._request_hints(pl)
        return pl

    @staticmethod
    def _satisfies(pl: Playlist, msn: int, part: int | None) -> bool:
        """The playlist holds segment msn (or later), or part `part` of segment msn or a later part; a part index
        past a complete segment's last is part 0 of the next segment (6.2.5.2)."""
        if part is None or pl.next_msn > msn + 1:
            return pl.next_msn > msn
        return any((p.msn, p.index) >= (msn, part) for p in pl.all_parts())

    def _request_hints(self, pl: Playlist) -> None:
        """Request every part a preload hint names at once (the server holds the request until the part is
        complete), unless it comes before where we started: a hint names the part after the last listed one."""
        assert self.start is not None
        for hint in pl.hints:
            if hint.type != "PART" or (pl.next_msn, len(pl.open_parts)) < self.start:
                continue
            key = (self.abs(hint.uri), hint.start)
            if key not in self.hinted and key not in self.hints_done:
                byterange = None if hint.start is None else (hint.start, hint.length)
                self.hinted[key] = asyncio.create_task(fetch(self.session, key[0], byterange))
                self.log.hints_requested += 1

    async def init_segment(self, uri: str) -> str:
        url = self.abs(uri)
        if url not in self.log.inits:
            got = await fetch(self.session, url)
            if got.status != 200:
                raise RuntimeError(f"init segment GET {url} -> {got.status}")
            self.log.inits[url] = got.body
        return url

    async def download_segment(self, segment: Segment) -> None:
        map_url = await self.init_segment(segment.map_uri)
        url = self.abs(segment.uri)
        got = await fetch(self.session, url, segment.byterange)
        if got.status not in (200, 206):
            self.log.problem(f"segment HTTP {got.status}", f"GET {url} (listed) -> {got.status}")
            return
        self.log.pieces.append(Piece(segment.msn, -1, map_url, got.body, got.done_at, "segment", got.arrivals))

    async def download_part(self, part: Part) -> None:
        map_url = await self.init_segment(part.map_uri)
        url = self.abs(part.uri)
        start = part.byterange[0] if part.byterange else None
        task = self.hinted.pop((url, start), None)
        self.hints_done.add((url, start))
        got = None
        if task is not None:
            try:
                got = await task
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                self.log.problem("hinted part request failed", f"GET {url} (preload hint): {type(exc).__name__}")
            if got is not None and got.status not in (200, 206):
                self.log.problem(f"hinted part HTTP {got.status}",
                                 f"GET {url} (advertised in EXT-X-PRELOAD-HINT) -> {got.status} {got.body[:120]!r} "
                                 "(6.2.6: a hinted resource MUST be available for request when its hint is added)")
                got = None
        via = "hint"
        if got is None:
            via = "part"
            got = await fetch(self.session, url, part.byterange)
            if got.status not in (200, 206):
                self.log.problem(f"part HTTP {got.status}", f"GET {url} (listed) -> {got.status}")
                return
        data, done_at = got.body, got.done_at
        if part.byterange is not None:
            length = part.byterange[1]
            data = got.body[:length]
            done_at = next((t for n, t in got.arrivals if n >= length), got.done_at)
        if via == "hint":
            self.log.hints_used += 1
            self.log.hint_holds.append(got.done_at - got.started)
            spread = done_at - got.first_byte_at
            self.log.hint_spreads.append(spread)
            if spread > STREAMED:
                self.log.problem("hinted part sent before it was complete",
                                 f"GET {url} (EXT-X-PRELOAD-HINT, sent at once): first byte after "
                                 f"{got.first_byte_at - got.started:.3f} s, last byte {spread:.3f} s later "
                                 f"({len(data)} bytes in {len(got.arrivals)} reads) on loopback (6.2.6: the server "
                                 "MUST refrain from transmitting any bytes belonging to a Partial Segment until all "
                                 "bytes of that Partial Segment can be transmitted at the full speed of the link)")
        self.log.pieces.append(Piece(part.msn, part.index, map_url, data, done_at, via, got.arrivals))

    async def first_playlist(self, until: float) -> Playlist | None:
        """The playlist once it lists something (the stream is live)."""
        while time.time() < until:
            try:
                got = await fetch(self.session, self.url)
            except (aiohttp.ClientError, asyncio.TimeoutError):
                got = None
            if got is not None and got.status == 200:
                pl = parse_playlist(got.body.decode())
                if pl.segments or pl.open_parts:
                    return await self.reload()
            await asyncio.sleep(0.2)
        return None

    async def follow_segments(self, until: float) -> None:
        pl = await self.first_playlist(until)
        if pl is None:
            self.log.problem("stream never went live", self.url)
            return
        next_msn = pl.next_msn  # what is listed already was made before we came: only new segments count
        while time.time() < until:
            if pl.can_block:
                new = await self.reload(next_msn)
            else:
                await asyncio.sleep(self.poll)
                new = await self.reload()
            pl = new or pl
            if new is None:
                await asyncio.sleep(self.poll)
            for segment in pl.segments:
                if segment.msn >= next_msn:
                    await self.download_segment(segment)
                    next_msn = segment.msn + 1
            if pl.ended:
                break

    async def follow_parts(self, until: float) -> None:
        pl = await self.first_playlist(until)
        if pl is None:
            self.log.problem("stream never went live", self.url)
            return
        if not pl.all_parts():
            self.log.problem("no parts in the LL playlist", self.log.first_playlist[-400:])
            return
        # Start at the next segment's first part, so each downloaded segment decodes from its keyframe.
        msn, index = (pl.next_msn + 1 if pl.open_parts else pl.next_msn), 0
        self.start = (msn, index)
        self._request_hints(pl)
        try:
            while time.time() < until and not pl.ended:
                segment = pl.segment(msn)
                if segment is not None and index >= len(segment.parts):
                    msn, index = msn + 1, 0  # that segment is complete and all its parts are in
                    continue
                part = pl.part(msn, index)
                if part is not None:
                    await self.download_part(part)
                    index += 1
                    continue
                if segment is not None or msn < pl.media_sequence + pl.skipped:
                    # Complete, but its parts are gone from the playlist (we fell behind): take the segment.
                    if segment is not None and index == 0:
                        await self.download_segment(segment)
                        self.log.segments_for_lost_parts += 1
                    else:
                        self.log.problem("parts lost", f"segment {msn} from part {index}: no longer listed")
                    msn, index = msn + 1, 0
                    continue
                new = await self.reload(msn, index) if pl.can_block else None
                if new is None:
                    await asyncio.sleep(self.poll)
                    new = await self.reload()
                pl = new or pl
        finally:
            for (url, _), task in self.hinted.items():
                if not task.done():
                    task.cancel()  # the hint of the part after the last one we took: still held open
                elif task.exception() is None and task.result().status not in (200, 206):
                    got = task.result()
                    self.log.problem(f"hinted, never published: HTTP {got.status}",
                                     f"GET {url} (advertised in EXT-X-PRELOAD-HINT, never listed as a part) -> "
                                     f"{got.status} after {got.done_at - got.started:.3f} s {got.body[:120]!r} "
                                     "(6.2.6 allows not publishing a hinted resource, with a 404)")
                elif task.exception() is not None:
                    self.log.problem("hinted part request failed",
                                     f"GET {url} (preload hint): {type(task.exception()).__name__}")
                elif url not in self.listed:
                    self.log.problem("hinted, fetched, never listed as a part",
                                     f"GET {url}: {len(task.result().body)} bytes, but no EXT-X-PART with that URI "
                                     "followed")
            await asyncio.gather(*self.hinted.values(), return_exceptions=True)
