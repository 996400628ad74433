"""How many watch a cloud stream now, by its platform's own count: IVS's `ConcurrentViews` in CloudWatch, Mux
Data's `current-concurrent-viewers`. Our own count only sees viewers in the stream's room (and HLS at our server);
a Mux or IVS stream's embed and direct viewers fetch from the platform's CDN, so only the platform counts them.

Asked off the event loop (boto3 and mux-python block), at most once per `interval` per stream. A failed ask is
logged (once per stream until it works again) and leaves the figure unknown: the sampler keeps our own count.
The request building and answer reading are plain functions, so they are testable without a platform.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Mapping, Protocol

from mediaserver.backends.base import RemoteStream
from mediaserver.config import Config, IvsConfig, MuxConfig

log = logging.getLogger(__name__)

IVS_NAMESPACE = "AWS/IVS"
IVS_METRIC = "ConcurrentViews"
IVS_DIMENSION = "Channel"            # the channel's resource id: the last part of its ARN
IVS_PERIOD = 60                      # ConcurrentViews is a one-minute metric
METRIC_WINDOW = 300.0                # an older datapoint says nothing about now: no figure
MUX_METRIC = "current-concurrent-viewers"


class ViewerCountError(RuntimeError):
    """The platform didn't give a viewer count; the message says which platform and why."""


# -- sans-IO: requests and answers ----------------------------------------------------------------------

def channel_id(channel_arn: str) -> str:
    """IVS's CloudWatch dimension value: the resource id, e.g. arn:aws:ivs:...:channel/AbCd -> AbCd."""
    return channel_arn.rsplit("/", 1)[-1]


def ivs_query(channel_arn: str, now: float) -> dict[str, Any]:
    """GetMetricData parameters for the channel's newest ConcurrentViews within METRIC_WINDOW."""
    end = datetime.fromtimestamp(now, timezone.utc)
    return {
        "MetricDataQueries": [{
            "Id": "views",
            "MetricStat": {"Metric": {"Namespace": IVS_NAMESPACE, "MetricName": IVS_METRIC,
                                      "Dimensions": [{"Name": IVS_DIMENSION, "Value": channel_id(channel_arn)}]},
                           "Period": IVS_PERIOD, "Stat": "Maximum"},
        }],
        "StartTime": end - timedelta(seconds=METRIC_WINDOW),
        "EndTime": end + timedelta(seconds=IVS_PERIOD),
        "ScanBy": "TimestampDescending",
    }


def ivs_newest(answer: Mapping[str, Any]) -> int | None:
    """The newest value of a GetMetricData answer (None: no datapoint in the window, nobody counted)."""
    for result in answer.get("MetricDataResults") or []:
        pairs = sorted(zip(result.get("Timestamps") or [], result.get("Values") or []), key=lambda p: p[0])
        if pairs:
            return max(0, int(round(float(pairs[-1][1]))))
    return None


def mux_filter(name: str, stream_id: str, remote: RemoteStream) -> str:
    """The Mux Data filter `name:value` picking this stream's views. live_stream_id/playback_id: Mux's ids
    (Mux Data fills them for Mux Video playback); video_id/video_series: our stream id, as our player's
    mux-embed metadata sets it."""
    if name == "live_stream_id":
        return f"live_stream_id:{remote.remote_id}"
    if name == "playback_id":
        return f"playback_id:{remote.playback_id or ''}"
    return f"{name}:{stream_id}"


def mux_total(rows: list[Any]) -> int:
    """Concurrent viewers summed over a breakdown's rows (one row per value of the dimension)."""
    return sum(int(getattr(row, "concurrent_viewers", 0) or 0) for row in rows)


# -- the platforms ----------------------------------------------------------------------------------

class ViewerSource(Protocol):
    name: str

    def count(self, stream_id: str, remote: RemoteStream, now: float) -> int | None:
        """Blocking: the platform's viewers of this stream now (None: the platform has no figure)."""
        ...

    def check(self) -> list[str]:
        """Blocking: what stops these credentials from reading viewer counts, in plain words (empty: fine)."""
        ...


class IvsViewers:
    """ConcurrentViews of the stream's IVS channel, from CloudWatch with the [ivs] credentials and region."""
    name = "ivs"

    def __init__(self, config: IvsConfig, *, client: Any | None = None) -> None:
        self.config = config
        self._client = client

    @property
    def client(self) -> Any:
        if self._client is None:
            import boto3
            from botocore.config import Config as BotoConfig
            # Short timeouts, one retry: a slow CloudWatch must not hold up the next sample for long.
            kwargs: dict[str, Any] = {"region_name": self.config.region, "config": BotoConfig(
                connect_timeout=5, read_timeout=10, retries={"max_attempts": 1, "mode": "standard"})}
            if self.config.endpoint_url:    # a stand-in (moto serves CloudWatch beside IVS)
                kwargs["endpoint_url"] = self.config.endpoint_url
            if self.config.access_key_id:
                kwargs["aws_access_key_id"] = self.config.access_key_id
                kwargs["aws_secret_access_key"] = self.config.secret_access_key
            self._client = boto3.client("cloudwatch", **kwargs)
        return self._client

    def count(self, stream_id: str, remote: RemoteStream, now: float) -> int | None:
        from botocore.exceptions import BotoCoreError, ClientError
        try:
            answer = self.client.get_metric_data(**ivs_query(remote.remote_id, now))
        except ClientError as exc:
            error = exc.response.get("Error", {})
            raise ViewerCountError(f"CloudWatch GetMetricData for IVS channel {channel_id(remote.remote_id)}: "
                                   f"{error.get('Code', '?')}: {error.get('Message', '')}") from exc
        except BotoCoreError as exc:
            raise ViewerCountError(f"CloudWatch can't be reached for IVS viewers: {exc}") from exc
        return ivs_newest(answer)

    def check(self) -> list[str]:
        """`mediaserver backends check`: can these credentials read ConcurrentViews (one empty query)?"""
        try:
            self.count("check", RemoteStream("ivs", f"arn:aws:ivs:{self.config.region}:0:channel/check"), time.time())
        except ViewerCountError as exc:
            return [f"viewer counts: {exc} (the credentials need cloudwatch:GetMetricData; "
                    "[ivs] viewers_from_cloudwatch = false turns the counts off)"]
        return []


class MuxViewers:
    """Mux Data's current-concurrent-viewers (the Monitoring API, through mux-python) for the stream, filtered
    by [mux] data_filter. Mux Data counts only players that report to it (Mux Player, or mux-embed with the
    environment's key): an unmonitored player is invisible here."""
    name = "mux"

    def __init__(self, config: MuxConfig) -> None:
        import mux_python

        self.config = config
        configuration = mux_python.Configuration(host=config.base_url.rstrip("/"))
        configuration.username = config.env("token_id")
        configuration.password = config.env("token_secret")
        self._monitoring = mux_python.MonitoringApi(mux_python.ApiClient(configuration))

    def count(self, stream_id: str, remote: RemoteStream, now: float) -> int | None:
        from mux_python.rest import ApiException
        from urllib3.exceptions import HTTPError

        dimension = self.config.data_filter
        try:
            answer = self._monitoring.get_monitoring_breakdown(
                MUX_METRIC, dimension=dimension, filters=[mux_filter(dimension, stream_id, remote)],
                _request_timeout=(5, 10))
        except ApiException as exc:
            raise ViewerCountError(f"Mux Data answered {exc.status} to {MUX_METRIC}: {_mux_reason(exc)}") from exc
        except (HTTPError, OSError) as exc:
            raise ViewerCountError(f"Mux Data can't be reached at {self.config.base_url}: {exc}") from exc
        return mux_total(list(answer.data or []))

    def check(self) -> list[str]:
        """`mediaserver backends check`: can this access token read Mux Data's monitoring (a cheap call)?"""
        from mux_python.rest import ApiException
        from urllib3.exceptions import HTTPError

        try:
            self._monitoring.list_monitoring_dimensions(_request_timeout=(5, 10))
        except ApiException as exc:
            return [f"viewer counts: Mux Data answered {exc.status}: {_mux_reason(exc)} (the access token needs "
                    "Mux Data read; [mux] data_viewers = false turns the counts off)"]
        except (HTTPError, OSError) as exc:
            return [f"viewer counts: Mux Data can't be reached at {self.config.base_url}: {exc}"]
        return []


def _mux_reason(exc: Any) -> str:
    try:
        messages = json.loads(exc.body or "{}").get("error", {}).get("messages") or []
        return "; ".join(str(m) for m in messages) or str(exc.reason)
    except (ValueError, AttributeError):
        return str(exc.reason)


# -- the cache the sampler and the report read ------------------------------------------------------------

@dataclass
class Figure:
    asked_at: float
    viewers: int | None                 # None: unknown (no datapoint, or the ask failed)
    error: str | None = None


class PlatformViewers:
    """The platforms' viewer counts per cloud stream, asked at most once per interval per stream."""

    def __init__(self, sources: Mapping[str, ViewerSource], interval: float,
                 clock: Callable[[], float] = time.time) -> None:
        self.sources = dict(sources)
        self.interval = interval
        self.clock = clock
        self._figures: dict[str, Figure] = {}

    def covers(self, row: Mapping[str, Any]) -> bool:
        return str(row.get("backend") or "builtin") in self.sources

    async def poll(self, row: Mapping[str, Any]) -> int | None:
        """The platform's viewers of this stream row now (cached for interval); None if not known."""
        stream_id = str(row["id"])
        source = self.sources.get(str(row.get("backend") or "builtin"))
        if source is None:
            return None
        now = self.clock()
        known = self._figures.get(stream_id)
        if known is not None and now - known.asked_at < self.interval:
            return known.viewers
        remote = _remote(row)
        try:
            viewers = await asyncio.to_thread(source.count, stream_id, remote, now)
            self._figures[stream_id] = Figure(now, viewers)
        except Exception as exc:  # a platform failure must not stop sampling: our own count stands
            message = str(exc) or type(exc).__name__
            if known is None or known.error != message:  # said once per stream, not every interval
                log.warning("analytics: %s viewers of stream %s unknown, keeping our own count: %s",
                            source.name, stream_id, message)
            self._figures[stream_id] = Figure(now, None, message)
        return self._figures[stream_id].viewers

    def latest(self, stream_id: str) -> int | None:
        known = self._figures.get(stream_id)
        return known.viewers if known is not None else None

    def forget_except(self, stream_ids: set[str]) -> None:
        """Drop the figures of streams no longer on air (bounded memory)."""
        for sid in [s for s in self._figures if s not in stream_ids]:
            del self._figures[sid]


def _remote(row: Mapping[str, Any]) -> RemoteStream:
    data = json.loads(row.get("backend_ref") or "{}")
    return RemoteStream(backend=data.get("backend", row.get("backend")), remote_id=data.get("remote_id", ""),
                        playback_id=data.get("playback_id"), extra=data.get("extra") or {})


def build_platform_viewers(config: Config) -> PlatformViewers | None:
    """The configured platforms' viewer sources (None when no cloud back-end is configured)."""
    sources: dict[str, ViewerSource] = {}
    if config.mux.configured() and config.mux.data_viewers:
        sources["mux"] = MuxViewers(config.mux)
    if config.ivs.configured() and config.ivs.viewers_from_cloudwatch:
        sources["ivs"] = IvsViewers(config.ivs)
    return PlatformViewers(sources, config.analytics.sample_seconds) if sources else None
