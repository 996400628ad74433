"""Our CMAF writer and H.264 helpers, checked by decoding real libx264/AAC output with PyAV and ffprobe.

Media is encoded once per module (3 s of 320x180 at 30 fps, one 440 Hz tone) to keep runs short.
"""
from __future__ import annotations

import json
import random
import re
import shutil
import struct
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from packager.fmp4 import AudioTrack, Sample, TrackFragment, VideoTrack, init_segment, media_segment
from packager.h264 import (
    H264Error, aac_codec_string, avcc_record, codec_string, is_annexb, split_annexb, sps_dimensions, to_avcc_sample,
)

WIDTH, HEIGHT, FPS, GOP, SECONDS = 320, 180, 30, 30, 3
VIDEO_TIMESCALE, AUDIO_RATE = 90000, 48000
FRAME_TICKS = VIDEO_TIMESCALE // FPS


@dataclass(frozen=True)
class Coded:
    """An encoded packet with the timing PyAV leaves optional pinned down."""

    data: bytes
    pts: int
    dts: int
    keyframe: bool
    duration: int

    @classmethod
    def of(cls, packet: av.Packet) -> Coded:
        assert packet.pts is not None and packet.dts is not None and packet.duration is not None
        return cls(bytes(packet), packet.pts, packet.dts, packet.is_keyframe, packet.duration)


@dataclass
class Encoded:
    extradata: bytes  # libx264 global header: Annex B SPS/PPS
    video: list[Coded]  # in decode order
    asc: bytes
    audio: list[Coded]


@dataclass
class Packaged:
    video_track: VideoTrack
    init: bytes
    segments: list[bytes]
    video_tfdt: list[int]  # per segment, video timescale
    audio_tfdt: list[int]  # per segment, audio timescale
    video_counts: list[int]
    audio_counts: list[int]
    cts_offsets: list[int]


def encode(bframes: int) -> Encoded:
    v = av.CodecContext.create("libx264", "w")
    v.width, v.height, v.pix_fmt = WIDTH, HEIGHT, "yuv420p"
    v.time_base, v.framerate = Fraction(1, VIDEO_TIMESCALE), Fraction(FPS)
    v.flags |= av.codec.context.Flags.global_header  # SPS/PPS in extradata, not only in-band
    v.max_b_frames = bframes
    # zerolatency turns B-frames off, so the B-frame run uses a High-profile preset instead.
    options = {"preset": "ultrafast", "tune": "zerolatency"} if not bframes else {"preset": "veryfast"}
    v.options = {**options, "g": str(GOP), "keyint_min": str(GOP), "sc_threshold": "0"}
    v.open()
    x = np.arange(WIDTH, dtype=np.int32)[None, :, None]
    y = np.arange(HEIGHT, dtype=np.int32)[:, None, None]
    packets: list[av.Packet] = []
    for i in range(FPS * SECONDS):
        rgb = ((x * 3 + y * 2 + i * 8 + np.array([0, 85, 170])) % 256).astype(np.uint8)  # a moving gradient
        picture = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
        picture.pts, picture.time_base = i * FRAME_TICKS, Fraction(1, VIDEO_TIMESCALE)
        packets += v.encode(picture)
    packets += v.encode(None)

    a = av.CodecContext.create("aac", "w")
    a.sample_rate, a.layout, a.format = AUDIO_RATE, "stereo", "fltp"
    a.time_base = Fraction(1, AUDIO_RATE)
    a.flags |= av.codec.context.Flags.global_header
    a.open()
    t = np.arange(AUDIO_RATE * SECONDS) / AUDIO_RATE
    tone = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    audio: list[av.Packet] = []
    for start in range(0, len(tone), a.frame_size):
        chunk = tone[start : start + a.frame_size]
        sound = av.AudioFrame.from_ndarray(np.stack([chunk, chunk]), format="fltp", layout="stereo")
        sound.sample_rate, sound.pts = AUDIO_RATE, start
        audio += a.encode(sound)
    audio += a.encode(None)
    assert v.extradata and a.extradata
    video = sorted((Coded.of(p) for p in packets), key=lambda p: p.dts)
    # The first packet is encoder priming at pts -1024; without an edit list it can't start at 0.
    kept = [Coded.of(p) for p in audio if p.pts is not None and p.pts >= 0]
    return Encoded(bytes(v.extradata), video, bytes(a.extradata), kept)


def package(enc: Encoded) -> Packaged:
    """One media segment per GOP, tfdt continuing across segments, audio cut at whole seconds."""
    video = VideoTrack(1, VIDEO_TIMESCALE, WIDTH, HEIGHT, avcc_record(enc.extradata))
    audio = AudioTrack(2, AUDIO_RATE, AUDIO_RATE, 2, enc.asc)
    # B-frames make x264's first dts negative; tfdt can't be, so decode times move up by `shift`
    # while presentation times stay put: the composition offsets go negative (trun version 1).
    shift = -min(0, enc.video[0].dts)
    cuts = [i for i, p in enumerate(enc.video) if p.keyframe] + [len(enc.video)]
    assert len(cuts) == SECONDS + 1, f"expected a keyframe every {GOP} frames, got cuts {cuts}"
    out = Packaged(video, init_segment([video, audio]), [], [], [], [], [], [])
    for s in range(SECONDS):
        group = enc.video[cuts[s] : cuts[s + 1]]
        samples = [
            Sample(to_avcc_sample(p.data), FRAME_TICKS, p.keyframe, p.pts - (p.dts + shift)) for p in group
        ]
        last = s == SECONDS - 1
        sound = [p for p in enc.audio if p.pts >= s * AUDIO_RATE and (last or p.pts < (s + 1) * AUDIO_RATE)]
        fragments = [
            TrackFragment(1, group[0].dts + shift, samples),
            TrackFragment(2, sound[0].pts, [Sample(p.data, p.duration, True) for p in sound]),
        ]
        out.segments.append(media_segment(s + 1, fragments))
        out.video_tfdt.append(group[0].dts + shift)
        out.audio_tfdt.append(sound[0].pts)
        out.video_counts.append(len(samples))
        out.audio_counts.append(len(sound))
        out.cts_offsets += [x.cts_offset for x in samples]
    return out


@pytest.fixture(scope="module")
def plain_encoded() -> Encoded:
    return encode(bframes=0)


@pytest.fixture(scope="module")
def plain(plain_encoded: Encoded) -> Packaged:
    return package(plain_encoded)


@pytest.fixture(scope="module")
def with_bframes() -> Packaged:
    return package(encode(bframes=2))


def ffprobe(path: Path) -> dict:
    assert shutil.which("ffprobe"), "ffprobe comes with Debian's ffmpeg; .ci/run installs it"
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-count_frames", "-show_streams", "-show_format", "-of", "json", str(path)],
        capture_output=True, text=True, check=True, timeout=60,
    )
    assert out.stderr == "", out.stderr
    return json.loads(out.stdout)


def top_level_boxes(data: bytes) -> list[tuple[bytes, bytes]]:
    boxes, pos = [], 0
    while pos < len(data):
        size, kind = struct.unpack_from(">I4s", data, pos)
        boxes.append((kind, data[pos + 8 : pos + size]))
        pos += size
    assert pos == len(data)
    return boxes


# -- the writer against real decoders --------------------------------------------------------
def test_each_segment_decodes_on_its_own(plain: Packaged, tmp_path: Path) -> None:
    for index, segment in enumerate(plain.segments):
        path = tmp_path / f"seg{index}.mp4"
        path.write_bytes(plain.init + segment)
        with av.open(str(path)) as c:
            frames = list(c.decode(video=0))
        assert len(frames) == plain.video_counts[index] == GOP
        assert (frames[0].width, frames[0].height) == (WIDTH, HEIGHT)
        assert frames[0].key_frame
        assert frames[0].time == pytest.approx(plain.video_tfdt[index] / VIDEO_TIMESCALE) == index
        with av.open(str(path)) as c:
            sound = list(c.decode(audio=0))
        assert len(sound) == plain.audio_counts[index] > 40
        assert sound[0].pts == plain.audio_tfdt[index]
        assert (sound[0].sample_rate, sound[0].layout.name) == (AUDIO_RATE, "stereo")


def test_whole_stream_decodes_and_ffprobe_agrees(plain: Packaged, tmp_path: Path) -> None:
    path = tmp_path / "all.mp4"
    path.write_bytes(plain.init + b"".join(plain.segments))
    with av.open(str(path)) as c:
        pts = [f.pts for f in c.decode(video=0)]
    assert pts == [i * FRAME_TICKS for i in range(FPS * SECONDS)]
    with av.open(str(path)) as c:
        assert len(list(c.decode(audio=0))) == sum(plain.audio_counts)

    info = ffprobe(path)
    streams = {s["codec_type"]: s for s in info["streams"]}
    video, audio = streams["video"], streams["audio"]
    assert (video["codec_name"], video["codec_tag_string"]) == ("h264", "avc1")
    assert (video["width"], video["height"]) == (WIDTH, HEIGHT)
    assert int(video["nb_read_frames"]) == FPS * SECONDS
    assert (audio["codec_name"], audio["codec_tag_string"], audio["profile"]) == ("aac", "mp4a", "LC")
    assert (int(audio["sample_rate"]), audio["channels"]) == (AUDIO_RATE, 2)
    assert int(audio["nb_read_frames"]) == sum(plain.audio_counts)
    assert "mp4" in info["format"]["format_name"]
    assert float(info["format"]["duration"]) == pytest.approx(SECONDS, abs=0.1)
    # The codec string's profile and level are the ones ffprobe reads from the stream.
    codecs = codec_string(plain.video_track.avcc)
    assert int(codecs[-2:], 16) == video["level"]
    assert video["profile"] == "Constrained Baseline" and codecs[5:9] == "42c0"


def test_b_frames_come_out_in_presentation_order(with_bframes: Packaged, tmp_path: Path) -> None:
    assert min(with_bframes.cts_offsets) < 0 < max(with_bframes.cts_offsets), "signed offsets not exercised"
    path = tmp_path / "bframes.mp4"
    path.write_bytes(with_bframes.init + b"".join(with_bframes.segments))
    with av.open(str(path)) as c:
        frames = list(c.decode(video=0))
    # The file says pts 0, 3000, 6000, ... but FFmpeg's mov demuxer adds the largest negative offset
    # back to every pts (its dts_shift), so here presentation may start one frame late.
    first = frames[0].pts
    assert first in (0, -min(with_bframes.cts_offsets))
    assert [f.pts for f in frames] == [first + i * FRAME_TICKS for i in range(FPS * SECONDS)]
    assert [i for i, f in enumerate(frames) if f.key_frame] == [0, GOP, 2 * GOP]
    assert int(ffprobe(path)["streams"][0]["nb_read_frames"]) == FPS * SECONDS
    for index, segment in enumerate(with_bframes.segments):
        single = tmp_path / f"b{index}.mp4"
        single.write_bytes(with_bframes.init + segment)
        with av.open(str(single)) as c:
            frames = list(c.decode(video=0))
        assert frames[0].key_frame and frames[0].pts == first + index * GOP * FRAME_TICKS and len(frames) == GOP


def test_partial_segments_are_more_moof_mdat_pairs(plain_encoded: Encoded, plain: Packaged, tmp_path: Path) -> None:
    """LL-HLS parts: the first GOP as three media_segment calls, styp only on the first."""
    group = [p for p in plain_encoded.video if p.dts < GOP * FRAME_TICKS]
    parts = []
    for n, start in enumerate(range(0, GOP, 10)):
        chunk = group[start : start + 10]
        samples = [Sample(to_avcc_sample(p.data), FRAME_TICKS, p.keyframe) for p in chunk]
        parts.append(media_segment(n + 1, [TrackFragment(1, chunk[0].dts, samples)], styp=n == 0))
    data = b"".join(parts)
    assert [k for k, _ in top_level_boxes(data)] == [b"styp", b"moof", b"mdat", b"moof", b"mdat", b"moof", b"mdat"]
    path = tmp_path / "parts.mp4"
    path.write_bytes(plain.init + data)
    with av.open(str(path)) as c:
        assert [f.pts for f in c.decode(video=0)] == [i * FRAME_TICKS for i in range(GOP)]


def test_segment_layout(plain: Packaged) -> None:
    assert [k for k, _ in top_level_boxes(plain.init)] == [b"ftyp", b"moov"]
    assert top_level_boxes(plain.init)[0][1][:4] == b"iso6"
    segment = plain.segments[1]
    boxes = top_level_boxes(segment)
    assert [k for k, _ in boxes] == [b"styp", b"moof", b"mdat"]
    moof_start = 8 + len(boxes[0][1])
    children = top_level_boxes(boxes[1][1])
    assert [k for k, _ in children] == [b"mfhd", b"traf", b"traf"]
    assert struct.unpack(">II", children[0][1]) == (0, 2)  # version/flags, sequence_number as given
    mdat_payload = moof_start + 8 + len(boxes[1][1]) + 8
    expected_offset = mdat_payload
    for _, traf in children[1:]:
        tfhd, tfdt, trun = top_level_boxes(traf)
        assert tfhd[0] == b"tfhd" and struct.unpack_from(">I", tfhd[1])[0] == 0x020000  # default-base-is-moof
        assert tfdt[0] == b"tfdt" and tfdt[1][0] == 1  # version 1: 64-bit decode time
        version_flags, count, data_offset = struct.unpack_from(">IIi", trun[1])
        assert (trun[0], version_flags) == (b"trun", 0x01000F01)
        assert moof_start + data_offset == expected_offset
        sizes = [struct.unpack_from(">I", trun[1], 12 + 16 * i + 4)[0] for i in range(count)]
        expected_offset += sum(sizes)
    assert expected_offset == len(segment)


def test_bad_samples_are_refused() -> None:
    with pytest.raises(ValueError, match="duration"):
        media_segment(1, [TrackFragment(1, 0, [Sample(b"\x00\x00\x00\x01\x65", -1, True)])])
    with pytest.raises(ValueError, match="cts_offset"):
        media_segment(1, [TrackFragment(1, 0, [Sample(b"x", 1, True, 2**31)])])
    with pytest.raises(ValueError, match="base_decode_time"):
        media_segment(1, [TrackFragment(1, -5, [Sample(b"x", 1, True)])])
    with pytest.raises(ValueError, match="at least one sample"):
        media_segment(1, [TrackFragment(1, 0, [])])
    with pytest.raises(ValueError, match="unique"):
        init_segment([AudioTrack(2, AUDIO_RATE, AUDIO_RATE, 2, b"\x11\x90")] * 2)


# -- H.264 helpers ----------------------------------------------------------------------------
def test_codec_strings_and_dimensions(plain_encoded: Encoded, with_bframes: Packaged, tmp_path: Path) -> None:
    plain_record = avcc_record(plain_encoded.extradata)
    high_record = with_bframes.video_track.avcc
    for record in (plain_record, high_record):
        assert re.fullmatch(r"avc1\.[0-9a-f]{6}", codec_string(record))
        assert sps_dimensions(record) == (WIDTH, HEIGHT)  # 180 rows = 12 macroblocks minus cropping
        assert avcc_record(record) == record  # a record passes through unchanged
    assert codec_string(plain_record) == "avc1." + plain_record[1:4].hex()
    assert aac_codec_string(plain_encoded.asc) == "mp4a.40.2"

    # The profile the decoder sees is the one in the string; High carries the 14496-15 extension bytes.
    path = tmp_path / "b.mp4"
    path.write_bytes(with_bframes.init + with_bframes.segments[0])
    with av.open(str(path)) as c:
        assert c.streams.video[0].codec_context.profile == "High"
    assert codec_string(high_record).startswith("avc1.64")
    assert high_record[-4:] == bytes([0xFC | 1, 0xF8, 0xF8, 0])  # 4:2:0, 8-bit, no SPS extensions
    # Constrained Baseline: no extension bytes after the SPS and PPS lists.
    assert plain_record[1] == 66
    assert len(plain_record) == 6 + sum(2 + len(u) for u in split_annexb(plain_encoded.extradata)) + 1


def test_annexb_round_trip(plain_encoded: Encoded) -> None:
    for packet in plain_encoded.video[:5]:
        annexb = packet.data
        assert is_annexb(annexb)  # PyAV's libx264 packets are Annex B, sometimes with 3-byte start codes
        sample = to_avcc_sample(annexb)
        nals, pos = [], 0
        while pos < len(sample):
            (size,) = struct.unpack_from(">I", sample, pos)
            nals.append(sample[pos + 4 : pos + 4 + size])
            pos += 4 + size
        assert nals == split_annexb(annexb)
        assert to_avcc_sample(sample) == sample
    mixed = b"\x00\x00\x00\x01\x67abc\x00\x00\x01\x68de\x00\x00\x00\x00\x01\x65" + bytes(40) + b"\x80"
    assert split_annexb(mixed) == [b"\x67abc", b"\x68de", b"\x65" + bytes(40) + b"\x80"]
    # A 300-byte NAL's length prefix starts 00 00 01 like a start code; it still isn't rewritten.
    long_nal = struct.pack(">I", 300) + b"\x41" + bytes(299)
    assert is_annexb(long_nal) and to_avcc_sample(long_nal) == long_nal


@pytest.mark.parametrize("call, data", [
    (split_annexb, b"nope"),
    (split_annexb, b"\x00\x00\x01\x00\x00"),
    (to_avcc_sample, b""),
    (to_avcc_sample, b"\x12\x34\x56"),
    (avcc_record, b""),
    (avcc_record, b"\x00\x00\x00\x01\x65\x88\x84"),  # an IDR slice, no SPS/PPS
    (avcc_record, b"\x01\x42\xc0\x0d\xff\xe1\x00\x40"),  # record cut inside its SPS
    (sps_dimensions, b"\x01\x42\xc0\x0d\xff\xe1\x00\x02\x68\x00\x01\x00\x00"),  # a PPS where the SPS goes
    (codec_string, b"\x00\x42\xc0\x0d"),
    (aac_codec_string, b"\x10"),
])
def test_bad_input_raises_h264_error(call: Callable[[bytes], object], data: bytes) -> None:
    with pytest.raises(H264Error):
        call(data)


def test_fuzz_only_h264_error_escapes(plain_encoded: Encoded, with_bframes: Packaged) -> None:
    rng = random.Random(1234)
    seeds = [plain_encoded.extradata, avcc_record(plain_encoded.extradata), with_bframes.video_track.avcc]
    for _ in range(300):
        roll = rng.random()
        if roll < 0.8:
            mutant = bytearray(rng.choice(seeds))
            for _ in range(rng.randrange(1, 6)):
                mutant[rng.randrange(len(mutant))] = rng.randrange(256)
            if rng.random() < 0.3:
                del mutant[rng.randrange(len(mutant)) :]
        else:
            mutant = bytearray(rng.randbytes(rng.randrange(0, 80)))
        data = bytes(mutant)
        for call in (avcc_record, sps_dimensions, codec_string, to_avcc_sample, split_annexb):
            try:
                call(data)
            except H264Error:
                pass
        try:
            sps_dimensions(avcc_record(data))
        except H264Error:
            pass
