"""Audio stays on the source's clock: encoder clock drift and lost audio packets don't move it against video."""
from __future__ import annotations

from pathlib import Path

from ingest.flv import TAG_AUDIO, FlvTag
from tests.media_source import encode_flv, flv_file, flv_tags
from tests.media_source import decode, run_worker
from transcode.audio_clock import AudioClock

FRAME = 1 / 30  # one video frame at 30 fps


def test_audio_clock_holds_a_fast_encoder_for_an_hour() -> None:
    """An hour of 1024-sample AAC frames from an encoder whose audio clock runs 0.1 % fast: the sample
    counter is corrected whenever it strays half a frame, so it stays within one video frame."""
    rate = 48_000
    clock = AudioClock(rate, tolerance=rate // 60)
    out_pos = 0  # where the next output sample goes (what the encoder's pts counter says)
    drop_pending = 0
    worst = 0.0
    packets = int(3600 * rate / 1024)
    for k in range(packets):
        source_time = k * 1024 / (rate * 1.001)  # the encoder stamps by its (slower) wall clock
        placement = clock.place(source_time, 1024)
        out_pos += placement.pad
        drop_pending += placement.drop
        lands = out_pos - drop_pending  # where this frame's first sample ends up on the output
        worst = max(worst, abs(lands / rate - source_time))
        used = max(0, 1024 - drop_pending)
        drop_pending = max(0, drop_pending - 1024)
        out_pos += used
    assert worst < FRAME, worst
    assert abs(clock.dropped / rate - 3600 * 0.001 / 1.001) < 0.05  # about 3.6 s dropped over the hour
    assert clock.padded == 0


def test_audio_clock_pads_a_lost_packet_and_anchors_at_the_floor() -> None:
    clock = AudioClock(48_000, floor=4800)
    assert clock.place(0.0, 1024).pad == 0  # before the floor: starts at the floor
    placement = clock.place((1024 + 4800 + 2048) / 48_000, 1024)  # two packets lost
    assert placement.pad == 2048 and placement.drop == 0


def stretch_audio(tags: list[FlvTag], factor: float) -> list[FlvTag]:
    return [FlvTag(t.kind, int(t.timestamp_ms * factor), t.body) if t.kind == TAG_AUDIO else t for t in tags]


def audio_tags(tags: list[FlvTag]) -> list[FlvTag]:
    return [t for t in tags if t.kind == TAG_AUDIO and t.body[1] == 1]


def test_fast_audio_clock_end_to_end(tmp_path: Path) -> None:
    """20 s with an audio clock 1 % fast (200 ms of drift by the end): audio stays on the source times."""
    tags = stretch_audio(flv_tags(encode_flv(seconds=20, audio_rate=48_000)), 1 / 1.01)
    run = run_worker(flv_file(tags), tmp_path)
    assert run.code == 0
    media = decode(run.media("180p"))
    last_source = audio_tags(tags)[-1].timestamp_ms / 1000 + 1024 / 48_000
    audio_end = media.audio_pts[-1] + 1024 / 48_000
    assert abs(audio_end - last_source) < FRAME, (audio_end, last_source)
    # Uncorrected, the counter would end 200 ms late (20 s of samples stamped over 19.8 s).
    assert abs(media.audio_samples / 48_000 - last_source) < 2 * FRAME


def test_lost_audio_packets_do_not_pull_audio_early(tmp_path: Path) -> None:
    tags = flv_tags(encode_flv(seconds=6))
    lost = {id(t) for t in audio_tags(tags)[100:130]}  # 640 ms of audio missing at about 2 s
    tags = [t for t in tags if id(t) not in lost]
    run = run_worker(flv_file(tags), tmp_path)
    assert run.code == 0
    media = decode(run.media("180p"))
    last_source = audio_tags(tags)[-1].timestamp_ms / 1000 + 1024 / 48_000
    audio_end = media.audio_pts[-1] + 1024 / 48_000
    assert abs(audio_end - last_source) < FRAME, (audio_end, last_source)
    assert abs(media.audio_samples / 48_000 - last_source) < 0.1  # the hole is filled with silence
