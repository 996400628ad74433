"""A frame number drawn into the picture and read back from any scaled, re-encoded copy of it (numpy only).

One row of large black/white blocks in the top-left corner: a start marker (white, black, white), 20 data bits
(most significant first, white = 1), an even-parity bit and a black stop block, on a mid-grey pad. Every size is
a fraction of the picture height, so the reader needs nothing but the decoded picture: a block is 1/24 of the
height (30 px at 720p, 15 px at 360p) and the whole code is 25 blocks wide (1.04 x the height), which fits any
picture at least as wide as it is tall.
"""
from __future__ import annotations

import numpy as np

BITS = 20
MAX_NUMBER = (1 << BITS) - 1  # 1,048,575 frames: 9.7 hours at 30 fps
START = (1, 0, 1)             # white, black, white: also the reader's white and black reference levels
STOP = (0,)
BLOCKS = len(START) + BITS + 1 + len(STOP)
BLOCK_FRACTION = 1 / 24       # block side as a fraction of the picture height
ROW_BLOCKS = 1.5              # the row is this many blocks tall (taller blocks survive chroma-free 4:2:0 and
                              # the vertical scaling filter better than square ones)
MIN_CONTRAST = 60.0           # luma levels between the marker's white and black, or the picture is not a code
MARGIN = 0.2                  # a bit reads only if it is this far (of the contrast) from the midpoint


class FrameCodeError(ValueError):
    """A number that cannot be drawn (negative or over 20 bits), or a picture too small or narrow for the code."""


def block_size(height: int) -> float:
    return height * BLOCK_FRACTION


def _blocks(number: int) -> list[int]:
    if not 0 <= number <= MAX_NUMBER:
        raise FrameCodeError(f"frame number {number} is outside 0..{MAX_NUMBER}")
    bits = [(number >> (BITS - 1 - i)) & 1 for i in range(BITS)]
    return [*START, *bits, sum(bits) & 1, *STOP]


def _check_size(height: int, width: int) -> float:
    block = block_size(height)
    if block < 4 or (BLOCKS + 2) * block > width:
        raise FrameCodeError(f"a {width}x{height} picture is too small or too narrow for the frame code")
    return block


def draw(plane: np.ndarray, number: int, white: int = 255, black: int = 0) -> None:
    """Draw `number` into plane (H x W luma, or H x W x C; changed in place). For a limited-range Y plane pass
    white=235, black=16."""
    height, width = plane.shape[:2]
    block = _check_size(height, width)
    grey = (white + black) // 2
    # The pad: half a block of grey around the row, so moving content next to it cannot bleed into a block.
    y0, y1 = round(0.5 * block), round((1.5 + ROW_BLOCKS) * block)
    plane[y0:y1, round(0.5 * block) : round((1.5 + BLOCKS) * block)] = grey
    top, bottom = round(block), round((1 + ROW_BLOCKS) * block)
    for i, on in enumerate(_blocks(number)):
        plane[top:bottom, round((1 + i) * block) : round((2 + i) * block)] = white if on else black


def _levels(luma: np.ndarray) -> list[float]:
    """The mean of the middle half of each block, left to right."""
    height, width = luma.shape[:2]
    block = _check_size(height, width)
    y0 = int(block * (1 + 0.25 * ROW_BLOCKS))
    y1 = max(int(block * (1 + 0.75 * ROW_BLOCKS)), y0 + 1)
    levels = []
    for i in range(BLOCKS):
        x0 = int(block * (1.25 + i))
        x1 = max(int(block * (1.75 + i)), x0 + 1)
        levels.append(float(luma[y0:y1, x0:x1].mean()))
    return levels


def read(luma: np.ndarray) -> int | None:
    """The number drawn by draw() in a luma picture (H x W) of any size, or None when there is no readable code
    (no marker, too little contrast, a block too grey to call, or a parity error)."""
    try:
        levels = _levels(luma)
    except FrameCodeError:
        return None
    white = (levels[0] + levels[2]) / 2
    black = levels[1]
    contrast = white - black
    if contrast < MIN_CONTRAST or abs(levels[0] - levels[2]) > contrast / 2:
        return None
    middle, margin = (white + black) / 2, MARGIN * contrast
    bits = []
    for level in levels[len(START):]:
        if abs(level - middle) < margin:
            return None
        bits.append(1 if level > middle else 0)
    data, parity, stop = bits[:BITS], bits[BITS], bits[BITS + 1:]
    if (sum(data) & 1) != parity or tuple(stop) != STOP:
        return None
    number = 0
    for bit in data:
        number = (number << 1) | bit
    return number


def luma_of(frame: "av.VideoFrame") -> np.ndarray:  # type: ignore[name-defined]  # noqa: F821
    """The Y plane of a decoded PyAV frame as an H x W array (no copy or colour conversion for 4:2:0 YUV)."""
    if frame.format.name in ("yuv420p", "yuvj420p", "nv12"):
        plane = frame.planes[0]
        rows = np.frombuffer(plane, np.uint8).reshape(frame.height, plane.line_size)
        return rows[:, : frame.width]
    return frame.to_ndarray(format="gray")


def read_frame(frame: "av.VideoFrame") -> int | None:  # type: ignore[name-defined]  # noqa: F821
    """read() on a decoded PyAV video frame."""
    return read(luma_of(frame))
