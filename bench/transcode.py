"""Transcode cost on an OBS-like 1080p30 source (x264 veryfast, 2 B-frames, keyframes every 2 s, AAC):
  default  our worker as shipped (top_rung "auto": the 1080p rung copies the source; the lower rungs encoded
           with the default preset, superfast)
  encoded  our worker with every rung encoded at x264 veryfast (top_rung "encode" and the preset before this
           version: the ladder as it was, though with this version's cheaper scaling and x264 threading),
  ffmpeg   the ffmpeg CLI encoding the identical all-encoded ladder.

The encoded sides do the same work: one x264 encode per rung and ONE shared AAC encode (ours encodes audio
once and muxes it into every rung; ffmpeg encodes it once into an HLS audio group every rung refers to).
Runs rotate the three sides --repeat times; prints median and spread (min-max) of speed (x real time),
CPU seconds per media second, and the ratios default/encoded and encoded/ffmpeg per round (so both sides of
a ratio saw about the same load), with the machine's load average around the runs. No pass/fail: figures only.
Usage: python bench/transcode.py [--seconds 20] [--repeat 3] [--ladder 1080,720,480,360]
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mediaserver.config import TranscodeConfig, default_ladder  # noqa: E402
from transcode.job import RenditionSpec, TranscodeJob  # noqa: E402

FFMPEG = shutil.which("ffmpeg") or "ffmpeg"


def make_source(path: Path, seconds: float) -> None:
    """1080p30 H.264 + AAC in FLV, as OBS's x264 sends it: veryfast, 2 B-frames, a keyframe every 2 s, 6 Mbit/s."""
    subprocess.run(
        [FFMPEG, "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc2=size=1920x1080:rate=30:duration={seconds}",
         "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={seconds}",
         "-c:v", "libx264", "-preset", "veryfast", "-bf", "2", "-b:v", "6M", "-maxrate", "6M", "-bufsize", "12M",
         "-g", "60", "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "160k", "-ac", "2", "-f", "flv", str(path)],
        check=True,
    )


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_ours(source: Path, out_dir: Path, ladder: list[RenditionSpec], segment: float,
             top_rung: str = "auto", preset: str = TranscodeConfig().preset) -> tuple[float, float]:
    job = TranscodeJob(stream_id="bench", store_root=str(out_dir), key_prefix="media/bench/b", renditions=ladder,
                       segment_duration=segment, top_rung=top_rung, preset=preset)
    cpu0, t0 = children_cpu(), time.perf_counter()
    with open(source, "rb") as stdin:
        subprocess.run([sys.executable, "-m", "transcode.worker", job.to_json()], stdin=stdin,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True,
                       cwd=Path(__file__).resolve().parent.parent)
    return time.perf_counter() - t0, children_cpu() - cpu0


def run_cli(source: Path, out_dir: Path, ladder: list[RenditionSpec], segment: float) -> tuple[float, float]:
    """The same ladder with the same encoder settings, packaged to fMP4 HLS by ffmpeg (what Owncast runs).

    Audio is mapped once and encoded once: every video variant joins the one audio group ("aud") in
    -var_stream_map, so ffmpeg runs one AAC encoder, as our worker does. The packaging differs only in
    where the encoded audio goes: ours copies it into every rung's segments, ffmpeg writes one audio rendition.
    """
    n = len(ladder)
    split = f"[0:v]split={n}" + "".join(f"[s{i}]" for i in range(n)) + ";"
    scales = ";".join(f"[s{i}]scale=-2:{r.height}:flags=bilinear[v{i}]" for i, r in enumerate(ladder))
    args = [FFMPEG, "-v", "error", "-y", "-i", str(source), "-filter_complex", split + scales]
    for i, r in enumerate(ladder):
        args += ["-map", f"[v{i}]", f"-c:v:{i}", "libx264", f"-b:v:{i}", str(r.video_bitrate),
                 f"-maxrate:v:{i}", str(int(r.video_bitrate * 1.2)), f"-bufsize:v:{i}", str(r.video_bitrate * 2)]
    args += ["-preset", "veryfast", "-tune", "zerolatency", "-bf", "0", "-sc_threshold", "0",
             "-force_key_frames", f"expr:gte(t,n_forced*{segment})", "-pix_fmt", "yuv420p"]
    args += ["-map", "0:a", "-c:a", "aac", "-b:a", "128k", "-ar", "48000", "-ac", "2",
             "-f", "hls", "-hls_time", str(segment), "-hls_segment_type", "fmp4", "-hls_list_size", "0",
             "-var_stream_map", " ".join(["a:0,agroup:aud"] + [f"v:{i},agroup:aud" for i in range(n)]),
             str(out_dir / "v%v" / "index.m3u8")]
    cpu0, t0 = children_cpu(), time.perf_counter()
    subprocess.run(args, check=True)
    return time.perf_counter() - t0, children_cpu() - cpu0


Runner = Callable[[Path, Path, list[RenditionSpec], float], tuple[float, float]]
SIDES: dict[str, Runner] = {
    "default": run_ours,
    "encoded": lambda source, out, ladder, segment: run_ours(source, out, ladder, segment, top_rung="encode",
                                                             preset="veryfast"),
    "ffmpeg": run_cli,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--segment", type=float, default=2.0)
    parser.add_argument("--ladder", default="1080,720,480,360", help="heights from the default ladder")
    args = parser.parse_args()
    heights = [int(h) for h in args.ladder.split(",")]
    ladder = [RenditionSpec(r.name, r.height, r.video_bitrate) for r in default_ladder() if r.height in heights]
    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        source = tmpdir / "source.flv"
        make_source(source, args.seconds)
        print(f"source: OBS-like 1920x1080 30 fps H.264 (2 B-frames, keyframes every 2 s), {args.seconds:.0f} s; "
              f"ladder: {', '.join(r.name for r in ladder)}; x264 zerolatency, default {TranscodeConfig().preset}, "
              f"encoded and ffmpeg veryfast; {os.cpu_count()} CPUs")
        results: dict[str, list[tuple[float, float]]] = {name: [] for name in SIDES}
        loads: list[float] = [os.getloadavg()[0]]
        names = list(SIDES)
        for i in range(args.repeat):
            # Rotate the order so no side always runs on a warmer (or busier) machine.
            for name in names[i % len(names):] + names[: i % len(names)]:
                out = tmpdir / f"{name}-{i}"
                out.mkdir()
                wall, cpu = SIDES[name](source, out, ladder, args.segment)
                results[name].append((wall, cpu))
                shutil.rmtree(out)
                loads.append(os.getloadavg()[0])
        print(f"{args.repeat} runs each, rotating; median [min-max]; machine load (1-min average) during the runs: "
              f"{spread(loads, '', 2)}")
        for name, runs in results.items():
            speeds = [args.seconds / wall for wall, _ in runs]
            per_second = [cpu / args.seconds for _, cpu in runs]
            print(f"{name:>8}: speed {spread(speeds, 'x')} real time   CPU {spread(per_second, ' s', 3)} per media second")
        print(f"  ratio default/encoded, CPU seconds: {ratio(results, 'default', 'encoded')}")
        print(f"  ratio default/ffmpeg,  CPU seconds: {ratio(results, 'default', 'ffmpeg')}")
        print(f"  ratio encoded/ffmpeg,  CPU seconds: {ratio(results, 'encoded', 'ffmpeg')}")


def ratio(results: dict[str, list[tuple[float, float]]], a: str, b: str) -> str:
    """The CPU ratio a/b per round of runs, as "median [min-max]"."""
    return spread([cpu_a / cpu_b for (_, cpu_a), (_, cpu_b) in zip(results[a], results[b])], "", 3)


def spread(values: list[float], unit: str, digits: int = 2) -> str:
    """"median [min-max]" of values."""
    return (f"{statistics.median(values):.{digits}f}{unit} "
            f"[{min(values):.{digits}f}-{max(values):.{digits}f}]")


if __name__ == "__main__":
    main()
