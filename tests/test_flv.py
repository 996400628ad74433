"""FLV parsing: round trips, real PyAV output, truncated and random input (only FlvError may escape)."""
from __future__ import annotations

import io
import random
from fractions import Fraction

import av
import numpy as np
import pytest

from ingest.flv import (
    TAG_AUDIO, TAG_SCRIPT, TAG_VIDEO, FlvError, FlvReader, FlvTag, UnsupportedCodec,
    encode_tag, flv_header, parse_audio_body, parse_video_body,
)


def sample_tags() -> list[FlvTag]:
    rng = random.Random(1)
    return [FlvTag(rng.choice([TAG_AUDIO, TAG_VIDEO, TAG_SCRIPT]), rng.randrange(0, 2**32), rng.randbytes(rng.randrange(0, 3000)))
            for _ in range(50)]


def test_round_trip_in_random_chunks() -> None:
    tags = sample_tags()
    stream = flv_header() + b"".join(encode_tag(t) for t in tags)
    rng = random.Random(2)
    reader, out, pos = FlvReader(), [], 0
    while pos < len(stream):
        step = rng.randrange(1, 500)
        out += reader.feed(stream[pos : pos + step])
        pos += step
    assert out == tags


def pyav_flv() -> bytes:
    buf = io.BytesIO()
    with av.open(buf, "w", format="flv") as c:
        v = c.add_stream("libx264", rate=30, options={"preset": "ultrafast", "g": "10"})
        v.width, v.height, v.pix_fmt = 160, 90, "yuv420p"
        a = c.add_stream("aac", rate=48000, layout="stereo")
        for i in range(20):
            f = av.VideoFrame.from_ndarray(np.full((90, 160, 3), i * 10, np.uint8), format="rgb24")
            f.pts, f.time_base = i, Fraction(1, 30)
            for p in v.encode(f):
                c.mux(p)
            af = av.AudioFrame.from_ndarray(np.zeros((2, 1600), np.float32), format="fltp", layout="stereo")
            af.sample_rate, af.pts = 48000, i * 1600
            for p in a.encode(af):
                c.mux(p)
        for p in v.encode(None):
            c.mux(p)
    return buf.getvalue()


def test_parses_real_pyav_output() -> None:
    tags = FlvReader().feed(pyav_flv())
    videos = [parse_video_body(t.body) for t in tags if t.kind == TAG_VIDEO]
    audios = [parse_audio_body(t.body) for t in tags if t.kind == TAG_AUDIO]
    assert videos[0].packet_type == 0 and videos[0].data[0] == 1  # AVC sequence header (avcC record)
    assert videos[1].keyframe and videos[1].packet_type == 1
    assert sum(v.keyframe for v in videos if v.packet_type == 1) == 2  # g=10 over 20 frames
    assert audios[0].packet_type == 0 and all(a.sound_format == 10 for a in audios)
    stamps = [t.timestamp_ms for t in tags if t.kind == TAG_VIDEO]
    assert stamps == sorted(stamps)


def test_bad_input_raises_flv_error() -> None:
    with pytest.raises(FlvError):
        FlvReader().feed(b"GIF89a" + bytes(20))
    with pytest.raises(FlvError):
        FlvReader().feed(flv_header() + bytes([7]) + bytes(14))  # unknown tag type
    with pytest.raises(FlvError):
        FlvReader(max_tag_size=100).feed(flv_header() + encode_tag(FlvTag(TAG_VIDEO, 0, bytes(200))))
    with pytest.raises(UnsupportedCodec):
        parse_video_body(bytes([0x12, 0, 0, 0, 0]))  # Sorenson H.263
    with pytest.raises(UnsupportedCodec):
        parse_audio_body(bytes([0x2F, 0]))  # MP3
    with pytest.raises(FlvError):
        parse_video_body(bytes([0x17, 1]))
    # Truncated: nothing is returned until the rest arrives.
    whole = flv_header() + encode_tag(FlvTag(TAG_VIDEO, 5, b"abc"))
    reader = FlvReader()
    assert reader.feed(whole[:-3]) == []
    assert reader.feed(whole[-3:]) == [FlvTag(TAG_VIDEO, 5, b"abc")]


def test_truncated_and_corrupted_input_raise_flv_error_naming_the_value() -> None:
    with pytest.raises(FlvError, match="'FLX'"):
        FlvReader().feed(b"FLX\x01")  # caught before the header is complete
    with pytest.raises(FlvError, match="header size 3"):
        FlvReader().feed(b"FLV\x01\x05" + (3).to_bytes(4, "big") + bytes(4))
    good = flv_header() + encode_tag(FlvTag(TAG_AUDIO, 0, b"\xaf\x01xyz"))
    corrupted = bytearray(good)
    corrupted[13] = 0x0C  # the tag type byte
    with pytest.raises(FlvError, match="tag type 12"):
        FlvReader().feed(bytes(corrupted))
    corrupted = bytearray(good)
    corrupted[14:17] = b"\xff\xff\xff"  # tag size
    with pytest.raises(FlvError, match="16777215 bytes"):
        FlvReader(max_tag_size=1 << 20).feed(bytes(corrupted))
    for body in (b"", b"\x17", b"\x17\x01\x00"):  # video bodies cut short
        with pytest.raises(FlvError):
            parse_video_body(body)
    for body in (b"", b"\xaf"):
        with pytest.raises(FlvError):
            parse_audio_body(body)
    with pytest.raises(FlvError, match=r"legacy FLV codec slot \(id 12\)"):
        parse_video_body(bytes([0x1C, 1, 0, 0, 0]))  # HEVC in the legacy FLV codec slot
    with pytest.raises(FlvError, match="tag type 7"):
        encode_tag(FlvTag(7, 0, b""))
    with pytest.raises(FlvError, match="24-bit"):
        encode_tag(FlvTag(TAG_VIDEO, 0, bytes(1 << 24)))


def test_video_and_audio_bodies() -> None:
    info = parse_video_body(bytes([0x27, 1, 0xFF, 0xFF, 0xFE]) + b"nal")  # inter frame, composition time -2
    assert (info.keyframe, info.codec_id, info.packet_type) == (False, 7, 1)
    assert (info.composition_time_ms, info.data) == (-2, b"nal")
    audio = parse_audio_body(b"\xaf\x00\x11\x90")
    assert (audio.sound_format, audio.packet_type, audio.data) == (10, 0, b"\x11\x90")
    stamp = encode_tag(FlvTag(TAG_SCRIPT, 0x12345678, b""))
    assert stamp[4:8] == bytes([0x34, 0x56, 0x78, 0x12])  # lower 24 bits, then the extended byte
    assert FlvReader().feed(flv_header() + stamp) == [FlvTag(TAG_SCRIPT, 0x12345678, b"")]


def test_fuzz_only_flv_error_escapes() -> None:
    rng = random.Random(7)
    base = pyav_flv()
    for _ in range(500):
        data = bytearray(base if rng.random() < 0.7 else rng.randbytes(rng.randrange(0, 400)))
        for _ in range(rng.randrange(1, 12)):
            if data:
                data[rng.randrange(len(data))] = rng.randrange(256)
        data = data[: rng.randrange(len(data) + 1)]
        reader = FlvReader(max_tag_size=rng.choice([64, 4096, 16 << 20]))
        try:
            pos = 0
            while pos < len(data):  # fed in random pieces, as a socket delivers it
                step = rng.randrange(1, 2000)
                for tag in reader.feed(bytes(data[pos : pos + step])):
                    if tag.kind == TAG_VIDEO:
                        parse_video_body(tag.body)
                    elif tag.kind == TAG_AUDIO:
                        parse_audio_body(tag.body)
                pos += step
        except FlvError:
            pass


def test_enhanced_rtmp_video_tags() -> None:
    """veovera enhanced RTMP: IsExHeader | FrameType | PacketType, FourCC, then the payload."""
    start = parse_video_body(bytes([0x90]) + b"hvc1" + b"\x01hvcC")  # key frame, SequenceStart
    assert (start.codec, start.packet_type, start.data) == ("hevc", 0, b"\x01hvcC")
    coded = parse_video_body(bytes([0x91]) + b"hvc1" + b"\xff\xff\xfe" + b"nal")  # CodedFrames: SI24 cts first
    assert (coded.keyframe, coded.packet_type, coded.composition_time_ms, coded.data) == (True, 1, -2, b"nal")
    x = parse_video_body(bytes([0xA3]) + b"av01" + b"obu")  # inter frame, CodedFramesX: no cts
    assert (x.codec, x.keyframe, x.packet_type, x.composition_time_ms, x.data) == ("av1", False, 1, 0, b"obu")
    vp9 = parse_video_body(bytes([0x91]) + b"vp09" + b"frame")  # CodedFrames of VP9 carry no cts either
    assert (vp9.codec, vp9.composition_time_ms, vp9.data) == ("vp9", 0, b"frame")
    assert parse_video_body(bytes([0xD4]) + b"hvc1" + b"meta").packet_type == -1  # command frame / metadata
    with pytest.raises(UnsupportedCodec, match="VP8 over enhanced RTMP is not supported"):
        parse_video_body(bytes([0x90]) + b"vp08" + b"\x01")
    with pytest.raises(UnsupportedCodec, match="FourCC b'xyz0'"):
        parse_video_body(b"\x91xyz0")
    with pytest.raises(UnsupportedCodec, match="multitrack"):
        parse_video_body(bytes([0x96]) + b"hvc1")
    with pytest.raises(FlvError):
        parse_video_body(bytes([0x91]) + b"hvc1" + b"\x00")  # too short for its cts


def test_unpacker_turns_tags_into_media_items() -> None:
    from ingest.flv import FlvUnpacker
    from ingest.media import AccessUnit, SourceMetadata, TrackInfo

    tags = FlvReader().feed(pyav_flv())
    unpacker = FlvUnpacker()
    items = [item for tag in tags for item in unpacker.feed(tag)]
    assert isinstance(items[0], SourceMetadata) and items[0].values["width"] > 0
    tracks = [i for i in items if isinstance(i, TrackInfo)]
    assert [(t.kind, t.codec) for t in tracks] == [("video", "h264"), ("audio", "aac")]
    assert tracks[0].extradata[0] == 1  # avcC
    units = [i for i in items if isinstance(i, AccessUnit)]
    video = [t for t in tags if t.kind == TAG_VIDEO and t.body[1] == 1]
    assert [u.dts_ms for u in units if u.kind == "video"] == [t.timestamp_ms for t in video]
    assert [u.data for u in units if u.kind == "video"] == [t.body[5:] for t in video]
    # A repeated, unchanged sequence header is not handed on twice; a unit before any header is dropped.
    header = next(t for t in tags if t.kind == TAG_VIDEO and t.body[1] == 0)
    assert unpacker.feed(header) == []
    assert FlvUnpacker().feed(video[0]) == []
    with pytest.raises(UnsupportedCodec):
        FlvUnpacker().feed(FlvTag(TAG_AUDIO, 0, b"\x2f\x00"))  # MP3


def test_metadata_from_real_pyav_output_and_garbage() -> None:
    from ingest.flv import parse_metadata

    script = next(t for t in FlvReader().feed(pyav_flv()) if t.kind == TAG_SCRIPT)
    meta = parse_metadata(script.body)
    assert meta is not None and meta["width"] > 0 and meta["videocodecid"] == 7.0 and "framerate" in meta
    rtmp_style = b"\x02\x00\x0d@setDataFrame" + script.body
    assert parse_metadata(rtmp_style) == meta
    assert parse_metadata(b"\x02\x00\x03abc\x00" + bytes(8)) is None
    rng = random.Random(3)
    for _ in range(2000):
        data = bytearray(script.body)
        for _ in range(rng.randrange(1, 6)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        data = data[: rng.randrange(len(data) + 1)]
        try:
            parse_metadata(bytes(data))
        except FlvError:
            pass
