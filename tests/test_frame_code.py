"""The latency bench's frame code: numbers drawn into 720p pictures are read back exactly after a real scale to
360p and a low-bitrate libx264 encode (PyAV), and a picture without a code, or with a flipped bit, reads as None.
"""
from __future__ import annotations

import io
import random
from fractions import Fraction

import av
import numpy as np
import pytest

from bench import frame_code

WIDTH, HEIGHT, FPS = 1280, 720, 30


def busy_picture(i: int, rng: np.random.Generator) -> np.ndarray:
    """RGB noise over a moving gradient: expensive for x264, so a low bitrate really costs detail."""
    img = rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    img[:, :, 1] //= 2
    img[:, :, 1] += np.linspace(0, 127, WIDTH, dtype=np.uint8)[None, :]
    x = (i * 37) % (WIDTH - 200)
    img[:200, x : x + 200] = 255  # a bright square sweeping across the top rows, over the code at times
    return img


def test_round_trip_in_memory() -> None:
    picture = np.zeros((HEIGHT, WIDTH), np.uint8)
    for number in (0, 1, 2, 12345, 0b10101010101010101010, frame_code.MAX_NUMBER):
        frame_code.draw(picture, number)
        assert frame_code.read(picture) == number


def test_unreadable_pictures_read_none() -> None:
    assert frame_code.read(np.full((HEIGHT, WIDTH), 128, np.uint8)) is None
    assert frame_code.read(np.random.default_rng(1).integers(0, 256, (HEIGHT, WIDTH), dtype=np.uint8)) is None
    assert frame_code.read(np.zeros((20, 20), np.uint8)) is None  # too small to hold a code
    picture = np.zeros((HEIGHT, WIDTH), np.uint8)
    frame_code.draw(picture, 777)
    block = frame_code.block_size(HEIGHT)
    x = round((1 + len(frame_code.START) + 5) * block)  # flip data bit 5: parity no longer matches
    y = round(block * (1 + frame_code.ROW_BLOCKS / 2))
    picture[y - 5 : y + 5, x + 5 : x + 20] = 255 - picture[y, x + 10]
    assert frame_code.read(picture) is None


def test_bad_numbers_and_sizes_raise() -> None:
    picture = np.zeros((HEIGHT, WIDTH), np.uint8)
    with pytest.raises(frame_code.FrameCodeError, match="1048576"):
        frame_code.draw(picture, frame_code.MAX_NUMBER + 1)
    with pytest.raises(frame_code.FrameCodeError, match="-1"):
        frame_code.draw(picture, -1)
    with pytest.raises(frame_code.FrameCodeError, match="100x720"):
        frame_code.draw(np.zeros((720, 100), np.uint8), 1)


@pytest.mark.parametrize("out_height,bitrate", [(360, 150_000), (480, 300_000)])
def test_survives_scaling_and_low_bitrate_x264(out_height: int, bitrate: int) -> None:
    rng = np.random.default_rng(7)
    numbers = [0, frame_code.MAX_NUMBER, *random.Random(3).sample(range(frame_code.MAX_NUMBER), 58)]
    out_width = (WIDTH * out_height // HEIGHT) // 2 * 2
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = out_width, out_height, "yuv420p"
        stream.bit_rate = bitrate
        stream.options = {"preset": "ultrafast", "tune": "zerolatency", "g": "60"}
        for i, number in enumerate(numbers):
            img = busy_picture(i, rng)
            frame_code.draw(img, number)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(
                width=out_width, height=out_height, format="yuv420p")
            frame.pts, frame.time_base = i, Fraction(1, FPS)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    size = buffer.tell()
    assert size * 8 * FPS / len(numbers) < 3 * bitrate, f"encode was not low-bitrate: {size} bytes"
    buffer.seek(0)
    with av.open(buffer, "r") as container:
        read = [frame_code.read_frame(frame) for frame in container.decode(video=0)]
    assert read == numbers
