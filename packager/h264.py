"""H.264 helpers for MP4 packaging: Annex B to length-prefixed samples, the avcC record, RFC 6381 codec strings.

Sans-IO and strict: bad input raises H264Error naming what is wrong.
"""
from __future__ import annotations

import struct

NAL_SPS = 7
NAL_PPS = 8
HIGH_PROFILES = (100, 110, 122, 144)


class H264Error(ValueError):
    """Malformed H.264 bitstream or configuration."""


def is_annexb(data: bytes) -> bool:
    return data[:3] == b"\x00\x00\x01" or data[:4] == b"\x00\x00\x00\x01"


def split_annexb(data: bytes) -> list[bytes]:
    """NAL units of an Annex B byte stream, without their start codes."""
    if not is_annexb(data):
        raise H264Error("data does not start with an Annex B start code")
    units: list[bytes] = []
    i, n = 0, len(data)
    start = -1
    while i + 2 < n:
        if data[i] == 0 and data[i + 1] == 0 and data[i + 2] == 1:
            if start >= 0:
                end = i
                while end > start and data[end - 1] == 0:  # trailing zeros belong to the next start code
                    end -= 1
                units.append(data[start:end])
            i += 3
            start = i
        else:
            i += 1
    if start >= 0 and start < n:
        units.append(data[start:])
    return [u for u in units if u]


def to_avcc_sample(data: bytes) -> bytes:
    """An access unit as MP4 wants it: 4-byte length before each NAL. Input that doesn't start with a
    start code passes unchanged; callers that already know their data is length-prefixed skip this."""
    if not is_annexb(data):
        return data
    return b"".join(struct.pack(">I", len(u)) + u for u in split_annexb(data))


def _nal_units(data: bytes) -> list[bytes]:
    if is_annexb(data):
        return split_annexb(data)
    units, pos = [], 0
    while pos + 4 <= len(data):
        size = struct.unpack(">I", data[pos : pos + 4])[0]
        pos += 4
        if size == 0 or pos + size > len(data):
            raise H264Error(f"NAL length {size} runs past the end of the data")
        units.append(data[pos : pos + size])
        pos += size
    return units


class _Bits:
    """Exp-Golomb reader over an RBSP (emulation prevention removed)."""

    def __init__(self, data: bytes) -> None:
        self.data = data.replace(b"\x00\x00\x03", b"\x00\x00")
        self.pos = 0

    def bit(self) -> int:
        byte = self.pos >> 3
        if byte >= len(self.data):
            raise H264Error("SPS ends early")
        value = (self.data[byte] >> (7 - (self.pos & 7))) & 1
        self.pos += 1
        return value

    def bits(self, n: int) -> int:
        value = 0
        for _ in range(n):
            value = (value << 1) | self.bit()
        return value

    def ue(self) -> int:
        zeros = 0
        while self.bit() == 0:
            zeros += 1
            if zeros > 31:
                raise H264Error("bad Exp-Golomb code in SPS")
        return (1 << zeros) - 1 + self.bits(zeros)

    def se(self) -> int:
        v = self.ue()
        return (v + 1) // 2 if v & 1 else -(v // 2)


def _parse_sps(sps: bytes) -> dict[str, int]:
    if len(sps) < 4 or sps[0] & 0x1F != NAL_SPS:
        raise H264Error("not an SPS NAL unit")
    r = _Bits(sps[1:])
    profile = r.bits(8)
    r.bits(8)
    r.bits(8)
    r.ue()
    chroma_format, bit_depth_luma, bit_depth_chroma = 1, 8, 8
    if profile in (100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135):
        chroma_format = r.ue()
        if chroma_format > 3:
            raise H264Error(f"chroma_format_idc {chroma_format} is invalid")
        if chroma_format == 3:
            r.bit()
        bit_depth_luma = r.ue() + 8
        bit_depth_chroma = r.ue() + 8
        r.bit()
        if r.bit():  # scaling matrices present
            for i in range(8 if chroma_format != 3 else 12):
                if r.bit():
                    last, nxt = 8, 8
                    for _ in range(16 if i < 6 else 64):
                        if nxt:
                            nxt = (last + r.se()) % 256
                        last = nxt or last
    r.ue()  # log2_max_frame_num
    poc_type = r.ue()
    if poc_type == 0:
        r.ue()
    elif poc_type == 1:
        r.bit()
        r.se()
        r.se()
        for _ in range(min(r.ue(), 255)):
            r.se()
    r.ue()
    r.bit()
    width_mbs = r.ue() + 1
    height_units = r.ue() + 1
    frame_mbs_only = r.bit()
    if not frame_mbs_only:
        r.bit()
    r.bit()
    crop = (0, 0, 0, 0)
    if r.bit():
        crop = (r.ue(), r.ue(), r.ue(), r.ue())
    sub_w = 1 if chroma_format == 3 else 2
    sub_h = 2 if chroma_format == 1 else 1
    if chroma_format == 0:
        sub_w, sub_h = 1, 1
    crop_unit_y = sub_h * (2 - frame_mbs_only)
    width = width_mbs * 16 - sub_w * (crop[0] + crop[1])
    height = height_units * 16 * (2 - frame_mbs_only) - crop_unit_y * (crop[2] + crop[3])
    if width <= 0 or height <= 0:
        raise H264Error(f"SPS gives an impossible size {width}x{height}")
    return {"profile": profile, "chroma_format": chroma_format, "bit_depth_luma": bit_depth_luma,
            "bit_depth_chroma": bit_depth_chroma, "width": width, "height": height}


def avcc_record(extradata: bytes) -> bytes:
    """AVCDecoderConfigurationRecord (ISO 14496-15) from encoder extradata; a record passes unchanged."""
    if not extradata:
        raise H264Error("no H.264 configuration (SPS/PPS) in the extradata")
    if extradata[0] == 1:
        if len(extradata) < 7:
            raise H264Error("AVC configuration record is too short")
        return extradata
    units = _nal_units(extradata)
    sps = [u for u in units if u and u[0] & 0x1F == NAL_SPS]
    pps = [u for u in units if u and u[0] & 0x1F == NAL_PPS]
    if not sps or not pps:
        raise H264Error("extradata has no SPS and PPS")
    info = _parse_sps(sps[0])
    out = bytearray([1, sps[0][1], sps[0][2], sps[0][3], 0xFF, 0xE0 | len(sps)])
    for s in sps:
        out += struct.pack(">H", len(s)) + s
    out.append(len(pps))
    for p in pps:
        out += struct.pack(">H", len(p)) + p
    if info["profile"] in HIGH_PROFILES:
        out += bytes([0xFC | info["chroma_format"], 0xF8 | (info["bit_depth_luma"] - 8),
                      0xF8 | (info["bit_depth_chroma"] - 8), 0])
    return bytes(out)


def _first_sps(record: bytes) -> bytes:
    if len(record) < 8 or record[0] != 1:
        raise H264Error("not an AVC configuration record")
    count = record[5] & 0x1F
    if count < 1:
        raise H264Error("AVC configuration record has no SPS")
    size = struct.unpack(">H", record[6:8])[0]
    if 8 + size > len(record):
        raise H264Error("SPS runs past the end of the record")
    return record[8 : 8 + size]


def sps_dimensions(record: bytes) -> tuple[int, int]:
    info = _parse_sps(_first_sps(record))
    return info["width"], info["height"]


def codec_string(record: bytes) -> str:
    """RFC 6381 'avc1.PPCCLL' from the record's profile, constraint flags and level."""
    if len(record) < 4 or record[0] != 1:
        raise H264Error("not an AVC configuration record")
    return f"avc1.{record[1]:02x}{record[2]:02x}{record[3]:02x}"


def aac_codec_string(asc: bytes) -> str:
    if len(asc) < 2:
        raise H264Error("AudioSpecificConfig is too short")
    object_type = asc[0] >> 3
    if object_type == 31:
        object_type = 32 + (((asc[0] & 7) << 3) | (asc[1] >> 5))
    return f"mp4a.40.{object_type}"
