"""Our CMAF writer and H.264 helpers, checked by decoding the output with PyAV and ffprobe."""
from __future__ import annotations

import io
import json
import random
import shutil
import subprocess
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from packager.fmp4 import AudioTrack, Sample, TrackFragment, VideoTrack, init_segment, media_segment
from packager.h264 import (
    H264Error, aac_codec_string, avcc_record, codec_string, sps_dimensions, split_annexb, to_avcc_sample,
)


def encode(bframes: int = 0) -> tuple[av.CodecContext, list[av.Packet], av.CodecContext, list[av.Packet]]:
    v = av.CodecContext.create("libx264", "w")
    v.width, v.height, v.pix_fmt = 320, 180, "yuv420p"
    v.time_base, v.framerate = Fraction(1, 90000), Fraction(30)
    v.flags |= av.codec.context.Flags.global_header
    v.max_b_frames = bframes
    v.options = {"preset": "ultrafast" if not bframes else "fast", "g": "30", "keyint_min": "30", "sc_threshold": "0"}
    v.open()
    vp: list[av.Packet] = []
    for i in range(90):
        f = av.VideoFrame.from_ndarray(np.full((180, 320, 3), (i * 7) % 255, np.uint8), format="rgb24").reformat(format="yuv420p")
        f.pts, f.time_base = i * 3000, Fraction(1, 90000)
        vp += v.encode(f)
    vp += v.encode(None)
    a = av.CodecContext.create("aac", "w")
    a.sample_rate, a.layout, a.format, a.time_base = 48000, "stereo", "fltp", Fraction(1, 48000)
    a.flags |= av.codec.context.Flags.global_header
    a.open()
    ap: list[av.Packet] = []
    t = np.arange(48000 * 3) / 48000
    tone = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    for i in range(0, len(tone) - 1024, 1024):
        f = av.AudioFrame.from_ndarray(np.stack([tone[i:i + 1024]] * 2), format="fltp", layout="stereo")
        f.sample_rate, f.pts = 48000, i
        ap += a.encode(f)
    ap += a.encode(None)
    return v, vp, a, [p for p in ap if p.pts is not None and p.pts >= 0]


def build(bframes: int = 0) -> tuple[bytes, list[bytes], VideoTrack]:
    v, vp, a, ap = encode(bframes)
    video = VideoTrack(1, 90000, 320, 180, avcc_record(bytes(v.extradata)))
    audio = AudioTrack(2, 48000, 48000, 2, bytes(a.extradata))
    init = init_segment([video, audio])
    segments = []
    vp.sort(key=lambda p: p.dts)
    shift = -min(p.dts for p in vp)  # B-frames start decode time below zero; tfdt can't
    cuts = [i for i, p in enumerate(vp) if p.is_keyframe] + [len(vp)]
    assert len(cuts) == 4
    for s in range(3):
        group = vp[cuts[s]:cuts[s + 1]]
        samples = [Sample(to_avcc_sample(bytes(p)), 3000, p.is_keyframe, p.pts - p.dts) for p in group]
        audio_group = [p for p in ap if s * 48000 <= p.pts < (s + 1) * 48000]
        frags = [TrackFragment(1, group[0].dts + shift, samples),
                 TrackFragment(2, audio_group[0].pts, [Sample(bytes(p), 1024, True) for p in audio_group])]
        segments.append(media_segment(s, frags))
    return init, segments, video


def test_each_segment_decodes_on_its_own() -> None:
    init, segments, _ = build()
    for index, seg in enumerate(segments):
        with av.open(io.BytesIO(init + seg), format="mp4") as c:
            first = next(p for p in c.demux(video=0) if p.pts is not None)
            assert first.is_keyframe and abs(float(first.pts * first.time_base) - index) < 0.05
        with av.open(io.BytesIO(init + seg), format="mp4") as c:
            frames = list(c.decode(video=0))
            assert len(frames) == 30 and (frames[0].width, frames[0].height) == (320, 180)
        with av.open(io.BytesIO(init + seg), format="mp4") as c:
            assert len(list(c.decode(audio=0))) > 40


def test_ffprobe_accepts_the_whole_stream(tmp_path: Path) -> None:
    assert shutil.which("ffprobe"), "ffprobe comes with Debian's ffmpeg; .ci/run installs it"
    init, segments, _ = build()
    path = tmp_path / "all.mp4"
    path.write_bytes(init + b"".join(segments))
    out = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-show_streams", "-of", "json", str(path)],
                         capture_output=True, text=True, check=True)
    assert out.stderr == ""
    streams = {s["codec_type"]: s for s in json.loads(out.stdout)["streams"]}
    assert streams["video"]["codec_name"] == "h264" and int(streams["video"]["nb_read_frames"]) == 90
    assert (streams["video"]["width"], streams["video"]["height"]) == (320, 180)
    assert streams["audio"]["codec_name"] == "aac" and int(streams["audio"]["channels"]) == 2


def test_b_frames_keep_presentation_order() -> None:
    init, segments, _ = build(bframes=2)
    with av.open(io.BytesIO(init + b"".join(segments)), format="mp4") as c:
        pts = [f.pts for f in c.decode(video=0)]
    assert pts == sorted(pts) and len(pts) == 90


def test_codec_strings_and_dimensions() -> None:
    _, _, video = build()
    assert sps_dimensions(video.avcc) == (320, 180)
    cs = codec_string(video.avcc)
    assert cs.startswith("avc1.") and len(cs) == 11 and int(cs[5:7], 16) == video.avcc[1]
    assert aac_codec_string(bytes([0x11, 0x90])) == "mp4a.40.2"


def test_annexb_helpers() -> None:
    nals = [b"\x67abc", b"\x68de", b"\x65" + bytes(50)]
    stream = b"".join(b"\x00\x00\x00\x01" + n for n in nals)
    assert split_annexb(stream) == nals
    avcc = to_avcc_sample(stream)
    assert to_avcc_sample(avcc) == avcc and avcc[:4] == b"\x00\x00\x00\x04"
    with pytest.raises(H264Error):
        avcc_record(b"\x00\x00\x00\x01\x65xxxx")  # no SPS/PPS
    with pytest.raises(H264Error):
        split_annexb(b"nope")


def test_fuzz_only_h264_error_escapes() -> None:
    rng = random.Random(3)
    _, _, video = build()
    for _ in range(300):
        data = bytearray(video.avcc if rng.random() < 0.6 else rng.randbytes(rng.randrange(0, 60)))
        for _ in range(rng.randrange(1, 6)):
            if data:
                data[rng.randrange(len(data))] = rng.randrange(256)
        try:
            sps_dimensions(avcc_record(bytes(data)))
        except H264Error:
            pass
