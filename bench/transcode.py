"""Transcode speed: our ladder worker vs the ffmpeg CLI running the identical ladder, same source, same run.

Both sides do the same work: one x264 encode per rung and ONE shared AAC encode (ours encodes audio once
and muxes it into every rung; ffmpeg encodes it once into an HLS audio group every rung refers to).
Runs alternate ours/ffmpeg --repeat times; prints median and spread (min-max) of speed (x real time),
CPU seconds and the ratios ours/ffmpeg (per pair of runs, so both sides of a ratio saw the same load).
No pass/fail: figures only.
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

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mediaserver.config import default_ladder  # noqa: E402
from transcode.job import RenditionSpec, TranscodeJob  # noqa: E402

FFMPEG = shutil.which("ffmpeg") or "ffmpeg"


def make_source(path: Path, seconds: float) -> None:
    """1080p30 H.264 + AAC in FLV, as OBS would send (2 s GOP)."""
    subprocess.run(
        [FFMPEG, "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc2=size=1920x1080:rate=30:duration={seconds}",
         "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={seconds}",
         "-c:v", "libx264", "-preset", "veryfast", "-b:v", "6M", "-g", "60", "-pix_fmt", "yuv420p",
         "-c:a", "aac", "-b:a", "160k", "-ac", "2", "-f", "flv", str(path)],
        check=True,
    )


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_ours(source: Path, out_dir: Path, ladder: list[RenditionSpec], segment: float) -> tuple[float, float]:
    job = TranscodeJob(stream_id="bench", store_root=str(out_dir), key_prefix="media/bench/b", renditions=ladder,
                       segment_duration=segment)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
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
        print(f"source: 1920x1080 30 fps, {args.seconds:.0f} s; ladder: {', '.join(r.name for r in ladder)}; "
              f"x264 veryfast zerolatency; {os.cpu_count()} CPUs")
        results: dict[str, list[tuple[float, float]]] = {"ours": [], "ffmpeg": []}
        for i in range(args.repeat):
            # Alternate the order so neither side always runs on a warmer machine.
            order = [("ours", run_ours), ("ffmpeg", run_cli)] if i % 2 == 0 else [("ffmpeg", run_cli), ("ours", run_ours)]
            for name, fn in order:
                out = tmpdir / f"{name}-{i}"
                out.mkdir()
                wall, cpu = fn(source, out, ladder, args.segment)
                results[name].append((wall, cpu))
                shutil.rmtree(out)
        print(f"{args.repeat} runs each, alternating; median [min-max]")
        for name, runs in results.items():
            speeds = [args.seconds / wall for wall, _ in runs]
            cpus = [cpu for _, cpu in runs]
            print(f"{name:>7}: speed {spread(speeds, 'x')} real time   CPU {spread(cpus, ' s')}")
        pairs = list(zip(results["ours"], results["ffmpeg"]))
        speed_ratio = [cli_wall / our_wall for (our_wall, _), (cli_wall, _) in pairs]
        cpu_ratio = [our_cpu / cli_cpu for (_, our_cpu), (_, cli_cpu) in pairs]
        print(f"  ratio ours/ffmpeg: speed {spread(speed_ratio, '', 3)}   CPU seconds {spread(cpu_ratio, '', 3)}")


def spread(values: list[float], unit: str, digits: int = 2) -> str:
    """"median [min-max]" of values."""
    return (f"{statistics.median(values):.{digits}f}{unit} "
            f"[{min(values):.{digits}f}-{max(values):.{digits}f}]")


if __name__ == "__main__":
    main()
