"""Turns a finished broadcast into its recording: VOD playlists over every segment and a fast-start MP4.

Also rebuilds a broadcast's segment list from the workers' index files after a server restart.

A reconnect at another source size can change the ladder mid-broadcast. The recording's master playlist
then lists only the rungs that have segments in every encoder connection (a player never runs out of
media on a rung that stopped); a rung made for part of the broadcast keeps its own <rendition>.m3u8 and
segments, but is left out of master.m3u8. The MP4 needs one picture size throughout: it is made from the
tallest complete rung that kept its size, and not made (the recording says why) when none did.
"""
from __future__ import annotations

import io
import json
import logging
import os
from pathlib import Path
from typing import Any

import av

from packager.playlist import RenditionTrack, SegmentEntry, complete_rungs, render_master, render_media
from storage.local import LocalStore

log = logging.getLogger(__name__)


def write_vod(store: LocalStore, key_prefix: str, tracks: list[RenditionTrack], segment_duration: float) -> None:
    """<prefix>/master.m3u8 and <prefix>/<rendition>.m3u8, relative URIs, EXT-X-ENDLIST. The master lists
    the complete rungs only (see the module docstring)."""
    complete = {t.name for t in complete_rungs(tracks)}
    variants = []
    for track in tracks:
        if not track.entries:
            continue
        text = render_media(
            track.entries, all_entries=track.entries, configured_target=segment_duration, ended=True, vod=True
        )
        store.write(f"{key_prefix}/{track.name}.m3u8", text.encode(), use_reserve=True)
        if track.name in complete:
            variants.append(track.variant(f"{track.name}.m3u8"))
        else:
            log.info("%s: rendition %s was made in part of the broadcast only; left out of master.m3u8",
                     key_prefix, track.name)
    store.write(f"{key_prefix}/master.m3u8", render_master(variants).encode(), use_reserve=True)


class ConcatReader(io.RawIOBase):
    """Several files read as one seekable stream, so init + segments demux without a joined copy."""

    def __init__(self, paths: list[Path]) -> None:
        self._paths = paths
        self._sizes = [p.stat().st_size for p in paths]
        self._starts = [sum(self._sizes[:i]) for i in range(len(paths))]
        self._total = sum(self._sizes)
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._pos, os.SEEK_END: self._total}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(buffer).cast("B")
        done = 0
        while done < len(view) and self._pos < self._total:
            index = max(i for i, s in enumerate(self._starts) if s <= self._pos)
            inner = self._pos - self._starts[index]
            with open(self._paths[index], "rb") as f:
                f.seek(inner)
                chunk = f.read(min(len(view) - done, self._sizes[index] - inner))
            if not chunk:
                break
            view[done : done + len(chunk)] = chunk
            done += len(chunk)
            self._pos += len(chunk)
        return done


def periods(track: RenditionTrack) -> list[tuple[str, list[SegmentEntry]]]:
    """Runs of segments that share one init segment (one per encoder connection)."""
    runs: list[tuple[str, list[SegmentEntry]]] = []
    for entry in track.entries:
        if not runs or runs[-1][0] != entry.init_uri:
            runs.append((entry.init_uri, []))
        runs[-1][1].append(entry)
    return runs


def mp4_source(tracks: list[RenditionTrack]) -> RenditionTrack | None:
    """The rung the MP4 is made from: the tallest complete rung with one picture size throughout, or None."""
    steady = [t for t in complete_rungs(tracks) if len(t.resolutions()) == 1]
    return max(steady, key=lambda t: t.height) if steady else None


def write_mp4(store: LocalStore, key_prefix: str, track: RenditionTrack) -> str:
    """Remux one rendition's segments into <prefix>/recording.mp4 (moov first). Returns the key."""
    key = f"{key_prefix}/recording.mp4"
    final = store.local_path(key)
    assert final is not None
    tmp = final.with_name(".recording.mp4.tmp")
    out = av.open(str(tmp), "w", format="mp4", options={"movflags": "+faststart"})
    try:
        out_streams: dict[str, av.stream.Stream] = {}
        last_dts: dict[str, int] = {}
        dropped = 0
        # Every output stream is added before the first packet is muxed: adding one later (a period that
        # brings audio the first lacked) makes FFmpeg's mp4 muxer divide by zero (SIGFPE, the whole process).
        for init_uri, _ in periods(track):
            init_path = store.path_for(f"{key_prefix}/{init_uri}")
            if not init_path.exists():
                continue
            with av.open(ConcatReader([init_path]), "r", format="mp4") as init:
                for stream in init.streams:
                    if stream.type not in out_streams:
                        out_streams[stream.type] = out.add_stream_from_template(stream)
        for init_uri, entries in periods(track):
            paths = [store.path_for(f"{key_prefix}/{init_uri}")] + [
                store.path_for(f"{key_prefix}/{e.uri}") for e in entries
            ]
            paths = [p for p in paths if p.exists()]
            with av.open(ConcatReader(paths), "r", format="mp4") as source:
                # FFmpeg's MP4 demuxer presents a track with negative composition offsets (a copied source
                # with B-frames) late by the largest of them. Our segmenter starts every period with a keyframe
                # that decodes at its presentation time, so the first packet's pts - dts is that lag: undone
                # here, or the MP4's picture would trail its sound by a frame.
                video_lag: int | None = None
                for packet in source.demux():
                    kind = packet.stream.type
                    if packet.dts is None or kind not in out_streams:
                        continue
                    if kind == "video" and packet.pts is not None:
                        if video_lag is None:
                            video_lag = packet.pts - packet.dts
                        packet.pts -= video_lag
                        packet.dts -= video_lag
                    # A reconnect can overlap the previous connection by a frame; MP4 needs rising DTS.
                    if kind in last_dts and packet.dts <= last_dts[kind]:
                        dropped += 1
                        continue
                    last_dts[kind] = packet.dts
                    packet.stream = out_streams[kind]
                    out.mux(packet)
    except Exception:
        out.close()
        tmp.unlink(missing_ok=True)
        raise
    out.close()
    if dropped:
        log.info("%s: %d overlapping packets left out of the MP4", key, dropped)
    os.replace(tmp, final)
    return key


def load_index(store: LocalStore, key_prefix: str) -> list[RenditionTrack]:
    """The rendition tracks of a broadcast as its workers logged them (index-<period>.jsonl)."""
    tracks: dict[str, RenditionTrack] = {}
    keys = sorted(
        (k for k in store.list(key_prefix) if k.rsplit("/", 1)[-1].startswith("index-")),
        key=lambda k: int(k.rsplit("-", 1)[-1].split(".")[0]),
    )
    for key in keys:
        period = int(key.rsplit("-", 1)[-1].split(".")[0])
        for line in store.read(key).splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue  # a line cut short by a crash
            name = event.get("rendition") or event.get("name")
            if not name:
                continue
            track = tracks.setdefault(name, RenditionTrack(name))
            if event["event"] == "rendition":
                track.set_format(period, int(event["width"]), int(event["height"]), str(event["codecs"]),
                                 float(event["frame_rate"]), int(event["bitrate"]))
            elif event["event"] == "segment":
                previous = track.entries[-1] if track.entries else None
                track.entries.append(entry_from_event(event, key_prefix, period, previous))
    return sorted(tracks.values(), key=lambda t: t.height, reverse=True)


def entry_from_event(
    event: dict[str, Any], key_prefix: str, period: int, previous: SegmentEntry | None
) -> SegmentEntry:
    """A playlist entry from a worker's segment event; a new init segment means a discontinuity."""
    rel = str(event["key"])[len(key_prefix) + 1 :]
    name = str(event["rendition"])
    # A worker that reopened its renditions (audio arriving late) names the new init in the event.
    init_key = str(event.get("init") or "")
    init_uri = init_key[len(key_prefix) + 1 :] if init_key.startswith(key_prefix + "/") else f"{name}/init-{period}.mp4"
    discontinuity = previous is not None and previous.init_uri != init_uri
    return SegmentEntry(
        sequence=int(event["sequence"]),
        start=float(event["start"]),
        duration=float(event["duration"]),
        uri=rel,
        init_uri=init_uri,
        program_date_time=float(event["pdt"]),
        size=int(event["size"]),
        discontinuity=discontinuity,
        period=period,
    )
