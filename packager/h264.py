"""H.264 and AAC helpers for MP4 packaging: Annex B to length-prefixed samples, the avcC record,
SPS picture size, and RFC 6381 codec strings.

Sans-IO and strict: plain functions over bytes; bad input raises H264Error naming what is wrong.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

NAL_SPS = 7
NAL_PPS = 8
# Profiles whose avcC carries chroma format and bit depths after the PPS list (ISO/IEC 14496-15 5.3.3.1).
HIGH_PROFILES = frozenset({100, 110, 122, 144})
# Profiles whose SPS carries chroma_format_idc, bit depths and scaling matrices (ITU-T H.264 7.3.2.1.1).
_SPS_CHROMA_PROFILES = frozenset({100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135})
_START_CODE = b"\x00\x00\x01"
_LENGTH_SIZE = 4  # we always write 4-byte NAL lengths (lengthSizeMinusOne = 3)


class H264Error(ValueError):
    """Malformed H.264 (or AAC) bitstream or configuration."""


# -- NAL unit framing ------------------------------------------------------------------------
def is_annexb(data: bytes) -> bool:
    """True if data starts with a 3- or 4-byte Annex B start code."""
    return data[:3] == _START_CODE or data[:4] == b"\x00" + _START_CODE


def split_annexb(data: bytes) -> list[bytes]:
    """NAL units of an Annex B byte stream, without their start codes (3- or 4-byte)."""
    if not is_annexb(data):
        raise H264Error(f"data does not start with an Annex B start code: {data[:4].hex()!r}")
    units: list[bytes] = []
    start = data.find(_START_CODE) + 3
    while True:
        nxt = data.find(_START_CODE, start)
        end = len(data) if nxt < 0 else nxt
        # Zeros before a start code are the first byte of a 4-byte code or trailing_zero_8bits; a
        # NAL ends in its rbsp_stop_one_bit (cabac_zero_words after it are padding a decoder skips).
        unit = data[start:end].rstrip(b"\x00")
        if unit:
            units.append(unit)
        if nxt < 0:
            break
        start = nxt + 3
    if not units:
        raise H264Error("Annex B data holds no NAL units")
    return units


def _split_length_prefixed(data: bytes) -> list[bytes] | None:
    """NAL units of 4-byte length-prefixed data, or None unless the lengths tile the data exactly
    and every unit has a plausible NAL header."""
    units: list[bytes] = []
    pos, n = 0, len(data)
    while pos < n:
        if pos + _LENGTH_SIZE > n:
            return None
        (size,) = struct.unpack_from(">I", data, pos)
        pos += _LENGTH_SIZE
        if size == 0 or pos + size > n:
            return None
        header = data[pos]
        if header & 0x80 or header & 0x1F == 0:  # forbidden_zero_bit set, or unspecified type 0
            return None
        units.append(data[pos : pos + size])
        pos += size
    return units or None


def _nal_units(data: bytes) -> list[bytes]:
    """NAL units of an access unit or extradata in either framing.

    A length prefix of 256..511 bytes begins 00 00 01, like a 3-byte start code, so data that
    starts that way is taken as length-prefixed when its lengths tile it exactly. A 4-byte start
    code would be a 1-byte first NAL, which no real access unit begins with, so it is always Annex B.
    """
    if not data.startswith(b"\x00" + _START_CODE):
        units = _split_length_prefixed(data)
        if units is not None:
            return units
    if is_annexb(data):
        return split_annexb(data)
    raise H264Error(f"neither Annex B nor 4-byte length-prefixed NAL units: {data[:8].hex()!r}")


def to_avcc_sample(data: bytes) -> bytes:
    """An access unit as MP4 wants it: a 4-byte length before each NAL. Input that is already
    length-prefixed is returned unchanged."""
    if not data:
        raise H264Error("empty access unit")
    if not data.startswith(b"\x00" + _START_CODE) and _split_length_prefixed(data) is not None:
        return data
    if not is_annexb(data):
        raise H264Error(f"neither Annex B nor 4-byte length-prefixed NAL units: {data[:8].hex()!r}")
    return b"".join(struct.pack(">I", len(u)) + u for u in split_annexb(data))


# -- SPS parsing -----------------------------------------------------------------------------
class _BitReader:
    """Big-endian bit reader with Exp-Golomb codes over an RBSP (emulation prevention removed)."""

    def __init__(self, rbsp: bytes) -> None:
        # 00 00 03 -> 00 00: the 03 only exists so the payload never imitates a start code.
        self._data = rbsp.replace(b"\x00\x00\x03", b"\x00\x00")
        self._pos = 0

    def bit(self) -> int:
        byte = self._pos >> 3
        if byte >= len(self._data):
            raise H264Error("SPS ends early")
        value = (self._data[byte] >> (7 - (self._pos & 7))) & 1
        self._pos += 1
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
                raise H264Error("Exp-Golomb code in SPS is longer than 32 bits")
        return (1 << zeros) - 1 + self.bits(zeros)

    def se(self) -> int:
        v = self.ue()
        return (v + 1) // 2 if v & 1 else -(v // 2)

    def ue_max(self, name: str, limit: int) -> int:
        value = self.ue()
        if value > limit:
            raise H264Error(f"SPS {name} = {value} is above its limit {limit}")
        return value


@dataclass(frozen=True, slots=True)
class _Sps:
    profile_idc: int
    chroma_format_idc: int
    bit_depth_luma: int
    bit_depth_chroma: int
    width: int
    height: int


def _skip_scaling_list(r: _BitReader, size: int) -> None:
    last, nxt = 8, 8
    for _ in range(size):
        if nxt:
            delta = r.se()
            if not -128 <= delta <= 127:
                raise H264Error(f"SPS delta_scale {delta} is out of range")
            nxt = (last + delta) % 256
        last = nxt or last


def _parse_sps(sps: bytes) -> _Sps:
    """The fields packaging needs from an SPS NAL unit (ITU-T H.264 7.3.2.1.1), VUI not read."""
    if len(sps) < 4 or sps[0] & 0x1F != NAL_SPS:
        raise H264Error(f"not an SPS NAL unit: {sps[:4].hex()!r}")
    r = _BitReader(sps[1:])
    profile = r.bits(8)
    r.bits(16)  # constraint flags, level_idc
    r.ue_max("seq_parameter_set_id", 31)
    chroma_format, depth_luma, depth_chroma, separate_planes = 1, 8, 8, 0
    if profile in _SPS_CHROMA_PROFILES:
        chroma_format = r.ue_max("chroma_format_idc", 3)
        if chroma_format == 3:
            separate_planes = r.bit()
        depth_luma = 8 + r.ue_max("bit_depth_luma_minus8", 6)
        depth_chroma = 8 + r.ue_max("bit_depth_chroma_minus8", 6)
        r.bit()  # qpprime_y_zero_transform_bypass_flag
        if r.bit():  # seq_scaling_matrix_present_flag
            for i in range(8 if chroma_format != 3 else 12):
                if r.bit():
                    _skip_scaling_list(r, 16 if i < 6 else 64)
    r.ue_max("log2_max_frame_num_minus4", 12)
    poc_type = r.ue_max("pic_order_cnt_type", 2)
    if poc_type == 0:
        r.ue_max("log2_max_pic_order_cnt_lsb_minus4", 12)
    elif poc_type == 1:
        r.bit()  # delta_pic_order_always_zero_flag
        r.se()
        r.se()
        for _ in range(r.ue_max("num_ref_frames_in_pic_order_cnt_cycle", 255)):
            r.se()
    r.ue()  # max_num_ref_frames
    r.bit()  # gaps_in_frame_num_value_allowed_flag
    width_mbs = r.ue() + 1
    height_map_units = r.ue() + 1
    frame_mbs_only = r.bit()
    if not frame_mbs_only:
        r.bit()  # mb_adaptive_frame_field_flag
    r.bit()  # direct_8x8_inference_flag
    left = right = top = bottom = 0
    if r.bit():  # frame_cropping_flag
        left, right, top, bottom = r.ue(), r.ue(), r.ue(), r.ue()
    # Crop offsets count in chroma samples (7.4.2.1.1, CropUnitX/CropUnitY); fields double the rows.
    chroma_array_type = 0 if separate_planes else chroma_format
    sub_w = 2 if chroma_array_type in (1, 2) else 1
    sub_h = 2 if chroma_array_type == 1 else 1
    field_factor = 2 - frame_mbs_only
    width = width_mbs * 16 - sub_w * (left + right)
    height = height_map_units * 16 * field_factor - sub_h * field_factor * (top + bottom)
    if width <= 0 or height <= 0:
        raise H264Error(f"SPS gives an impossible picture size {width}x{height}")
    return _Sps(profile, chroma_format, depth_luma, depth_chroma, width, height)


# -- AVCDecoderConfigurationRecord -----------------------------------------------------------
def _record_parameter_sets(record: bytes) -> tuple[list[bytes], list[bytes]]:
    """SPS and PPS lists of an AVCDecoderConfigurationRecord, checking they fit in it."""
    if len(record) < 7 or record[0] != 1:
        raise H264Error(f"not an AVC configuration record: {record[:8].hex()!r}")
    pos = 5
    lists: list[list[bytes]] = []
    for count_mask in (0x1F, 0xFF):  # numOfSequenceParameterSets is 5 bits, numOfPictureParameterSets 8
        if pos >= len(record):
            raise H264Error("AVC configuration record ends before its parameter set count")
        count = record[pos] & count_mask
        pos += 1
        units: list[bytes] = []
        for _ in range(count):
            if pos + 2 > len(record):
                raise H264Error("AVC configuration record ends inside a parameter set length")
            (size,) = struct.unpack_from(">H", record, pos)
            pos += 2
            if pos + size > len(record):
                raise H264Error(f"parameter set of {size} bytes runs past the end of the record")
            units.append(record[pos : pos + size])
            pos += size
        lists.append(units)
    return lists[0], lists[1]


def avcc_record(extradata: bytes) -> bytes:
    """AVCDecoderConfigurationRecord (ISO/IEC 14496-15) from encoder extradata.

    Annex B or length-prefixed SPS/PPS become a record (other NAL types, such as x264's SEI,
    are dropped); a record (first byte 1) is checked and returned unchanged.
    """
    if not extradata:
        raise H264Error("no H.264 configuration (SPS/PPS): extradata is empty")
    if extradata[0] == 1:
        sps_list, pps_list = _record_parameter_sets(extradata)
        if not sps_list or not pps_list:
            raise H264Error("AVC configuration record has no SPS or no PPS")
        return extradata
    units = _nal_units(extradata)
    sps_list = [u for u in units if u[0] & 0x1F == NAL_SPS]
    pps_list = [u for u in units if u[0] & 0x1F == NAL_PPS]
    if not sps_list or not pps_list:
        raise H264Error(f"extradata has {len(sps_list)} SPS and {len(pps_list)} PPS; both are needed")
    if len(sps_list) > 31 or len(pps_list) > 255:
        raise H264Error(f"too many parameter sets for a record: {len(sps_list)} SPS, {len(pps_list)} PPS")
    if any(len(u) > 0xFFFF for u in sps_list + pps_list):
        raise H264Error("a parameter set is longer than 65535 bytes")
    sps = _parse_sps(sps_list[0])
    first = sps_list[0]
    # version, profile, constraint flags, level, 0xFF = reserved + lengthSizeMinusOne 3, 0xE0 | SPS count
    out = bytearray([1, first[1], first[2], first[3], 0xFC | (_LENGTH_SIZE - 1), 0xE0 | len(sps_list)])
    for unit in sps_list:
        out += struct.pack(">H", len(unit)) + unit
    out.append(len(pps_list))
    for unit in pps_list:
        out += struct.pack(">H", len(unit)) + unit
    if sps.profile_idc in HIGH_PROFILES:
        out += bytes([
            0xFC | sps.chroma_format_idc,
            0xF8 | (sps.bit_depth_luma - 8),
            0xF8 | (sps.bit_depth_chroma - 8),
            0,  # numOfSequenceParameterSetExt
        ])
    return bytes(out)


def sps_dimensions(record: bytes) -> tuple[int, int]:
    """Cropped (width, height) in pixels from the first SPS of an AVC configuration record."""
    sps_list, _ = _record_parameter_sets(record)
    if not sps_list:
        raise H264Error("AVC configuration record has no SPS")
    sps = _parse_sps(sps_list[0])
    return sps.width, sps.height


def codec_string(record: bytes) -> str:
    """RFC 6381 'avc1.PPCCLL': profile, constraint flags and level from the record."""
    _record_parameter_sets(record)
    return f"avc1.{record[1]:02x}{record[2]:02x}{record[3]:02x}"


def aac_codec_string(asc: bytes) -> str:
    """RFC 6381 'mp4a.40.N' with N the audioObjectType of an AudioSpecificConfig (ISO/IEC 14496-3 1.6.2.1)."""
    if len(asc) < 2:
        raise H264Error(f"AudioSpecificConfig is too short: {asc.hex()!r}")
    object_type = asc[0] >> 3
    if object_type == 31:  # escape: 6 more bits, offset by 32
        object_type = 32 + (((asc[0] & 0x07) << 3) | (asc[1] >> 5))
    if object_type == 0:
        raise H264Error("AudioSpecificConfig has audio object type 0 (null)")
    return f"mp4a.40.{object_type}"
