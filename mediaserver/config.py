"""One typed configuration: every default, limit and timeout, loaded from config.toml.

Unknown keys are an error (a typo in a church's config should not be silently ignored).
"""
from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit
from typing import Any


class ConfigError(ValueError):
    """config.toml is unreadable or holds a bad value; the message names the key."""


@dataclass
class ServerConfig:
    host: str = "0.0.0.0"
    http_port: int = 8080
    rtmp_port: int = 1935
    # The address people and encoders use to reach this box, e.g. "https://stream.mychurch.org" (a reverse proxy's
    # or this server's own HTTPS). Every URL the server prints or returns is built from it; the RTMP URL takes its
    # host name. Empty: public_host, else each request's Host header.
    public_url: str = ""
    # Deprecated (use public_url): a host name; the same as public_url = "http://NAME:HTTP_PORT".
    public_host: str = ""
    data_dir: str = "./data"
    # Bearer token for the admin API. MEDIASERVER_ADMIN_TOKEN in the environment wins.
    admin_token: str = ""
    # Addresses (or CIDR networks) of reverse proxies whose X-Forwarded-For names the real client.
    # Empty: the socket's peer address is the client (no header is believed).
    trusted_proxies: list[str] = field(default_factory=list)
    # HTTPS served directly: PEM certificate (chain) and private key files. Both empty: HTTP only.
    tls_cert: str = ""
    tls_key: str = ""
    # Port of the HTTPS listener (only with tls_cert and tls_key); HTTP stays on http_port.
    https_port: int = 8443
    # Port of the RTMPS listener (RTMP over TLS, with the same certificate; only with tls_cert and tls_key).
    rtmps_port: int = 1936
    # Bearer token for Prometheus at /metrics. Empty: /metrics answers only clients on this machine that reach
    # the socket directly (not through a reverse proxy).
    metrics_token: str = ""

    def base_url(self) -> str | None:
        """The public base URL without a trailing slash (public_url, else derived from public_host), or None."""
        if self.public_url:
            return self.public_url.rstrip("/")
        if self.public_host:
            return f"http://{self.public_host}{'' if self.http_port == 80 else f':{self.http_port}'}"
        return None

    def public_hostname(self) -> str | None:
        """The host name in the public URL (for rtmp://HOST/...), or None."""
        base = self.base_url()
        return urlsplit(base).hostname if base else None


@dataclass
class RtmpConfig:
    app: str = "live"
    handshake_timeout: float = 10.0
    idle_timeout: float = 30.0
    # Publishing encoders at once (connections that sent a valid stream key).
    max_connections: int = 100
    # Connections that have not yet sent a valid key, in total and per client address. When either is
    # full the oldest such connection is dropped to make room, so a real encoder always gets in.
    max_pending_connections: int = 64
    max_pending_per_address: int = 8


@dataclass
class WhipConfig:
    # WHIP ingest (POST /whip/{stream}, browsers and WebRTC encoders; ingest/whip.py).
    enabled: bool = True
    max_sessions: int = 10          # WHIP publishes at once (each is a WebRTC peer connection)
    keyframe_interval: float = 2.0  # seconds between keyframe requests to the browser; 0 = only when needed
    stun_server: str = ""           # e.g. "stun:stun.l.google.com:19302" when the server is behind NAT


@dataclass
class SrtConfig:
    # SRT ingest (ingest/srt.py): caller encoders push MPEG-TS (H.264 video) to an ffmpeg listener. ffmpeg's listener
    # takes one caller per port, so each stream key gets its own UDP port from port .. port + ports - 1, kept for good.
    # On only when the ffmpeg on PATH has libsrt (Debian's does); otherwise the server logs that SRT is off.
    enabled: bool = True
    port: int = 8890             # the first SRT port (--srt-port)
    ports: int = 50              # how many ports, i.e. stream keys that can listen at once
    latency_ms: int = 500        # SRT receive latency (the caller's and ours: the larger wins); ~4x the round trip
    probe_seconds: float = 2.0   # ffmpeg reads this much of the TS to learn its codecs before media flows
    listen_days: float = 30.0    # an ended stream's port keeps listening this long after its last use; 0 = forever
    ffmpeg: str = "ffmpeg"       # the ffmpeg binary (needs libsrt)


@dataclass
class Rendition:
    name: str
    height: int
    video_bitrate: int  # bits per second
    passthrough: bool = False


def default_ladder() -> list[Rendition]:
    return [
        Rendition("1080p", 1080, 5_000_000),
        Rendition("720p", 720, 2_800_000),
        Rendition("480p", 480, 1_200_000),
        Rendition("360p", 360, 700_000),
    ]


@dataclass
class TranscodeConfig:
    # superfast: with the top rung copied from the source, the lower rungs at about 0.4 dB PSNR under veryfast
    # bring a 1080p ladder to about half the CPU it took all encoded at veryfast (bench/transcode.py).
    preset: str = "superfast"
    tune: str = "zerolatency"
    audio_bitrate: int = 128_000
    audio_sample_rate: int = 48_000
    renditions: list[Rendition] = field(default_factory=default_ladder)
    # The tallest rung: "auto" copies the source video into it (no re-encode: about half the CPU) when the
    # source is H.264 at that rung's height, progressive 8-bit 4:2:0, with keyframes at most 2 s apart;
    # otherwise it is encoded. "passthrough" always copies it; "encode" always encodes it.
    top_rung: str = "auto"
    # A worker that dies is restarted this many times per connection before the stream is FAILED.
    max_restarts: int = 1
    # Worker boxes running `mediaserver transcode-worker` ("host:port", taken in turn); empty: transcode here.
    # See docs/transcode-protocol.md. remote_secret_file holds the secret the boxes share with this server.
    remote_workers: list[str] = field(default_factory=list)
    remote_secret_file: str = ""
    # A box that can't be reached, refuses, or dies mid-broadcast: transcode here for the next connection or
    # restart (and leave that box out for remote_cooldown seconds) instead of failing the stream.
    remote_fallback_local: bool = True
    remote_cooldown: float = 60.0


@dataclass
class HlsConfig:
    segment_duration: float = 2.0
    # Seconds of rewind in the live playlists; 0 keeps only the live edge.
    dvr_window: float = 7200.0
    # Segments kept in the playlist when dvr_window is 0.
    live_edge_segments: int = 6
    # Low-Latency HLS (streams with low_latency on): the longest part, in seconds.
    part_target: float = 0.5
    # Live storyboard (scrub previews on the DVR bar): one thumbnail every this many seconds of media.
    storyboard_interval: float = 10.0


@dataclass
class StreamConfig:
    # Seconds an encoder may be gone before the broadcast ends.
    reconnect_window: float = 60.0


@dataclass
class ScheduleConfig:
    # Occurrences of recurring series exist as streams this many weeks ahead.
    materialize_weeks: int = 8
    # "Starting soon" (event and webhook) this many minutes before a scheduled start.
    starting_soon_minutes: float = 15.0
    # A stream still SCHEDULED this long after its start is CANCELLED.
    auto_cancel_minutes: float = 30.0
    # Seconds between scheduler passes.
    interval: float = 30.0


@dataclass
class StorageConfig:
    # Media writes stop (reported as "disk full") when less than this is free, so the database
    # and the recordings of what was already streamed can still be saved.
    reserve_mb: float = 256.0
    # Retention: this many days after a recording is saved, its HLS segments and playlists are deleted and the
    # MP4 is kept (the recording then plays as the MP4). 0: keep them forever.
    keep_segments_days: float = 30.0
    # This many days after a recording is saved, the whole recording (MP4 included) is deleted. 0: forever.
    keep_recordings_days: float = 0.0
    # Seconds between retention passes.
    retention_interval: float = 3600.0
    # Where finished recordings live: "local" (the data folder) or "s3" (any S3-API store: AWS, MinIO, Ceph,
    # Backblaze). Live work always stays on the local disk; with "s3" a recording moves to the bucket once
    # its MP4, thumbnails and podcast audio are made (storage/tiered.py).
    backend: str = "local"
    s3_bucket: str = ""
    s3_endpoint_url: str = ""        # empty for AWS; e.g. "http://minio.lan:9000" for MinIO
    s3_region: str = ""              # empty: boto3's default (AWS_DEFAULT_REGION, ~/.aws/config)
    s3_prefix: str = ""              # a folder inside the bucket for this server's keys
    # Empty: boto3's own chain (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, ~/.aws/credentials, instance role).
    s3_access_key_id: str = ""
    s3_secret_access_key: str = ""
    s3_keep_local: bool = False      # keep the local copy of a recording after it is stored in S3
    s3_url_seconds: int = 300        # lifetime of the presigned URLs players are redirected to


@dataclass
class WebhooksConfig:
    # Deliveries to loopback, private (10/8, 172.16/12, 192.168/16, fc00::/7), link-local (169.254/16, cloud
    # metadata) and multicast addresses are refused unless this is true (e.g. a receiver on the same LAN).
    allow_private_networks: bool = False


@dataclass
class SimulcastConfig:
    # Simulcast pushes to loopback, private, link-local and multicast addresses are refused (status FAILED)
    # unless this is true (e.g. your own RTMP server on the same LAN).
    allow_private_networks: bool = False


@dataclass
class MuxConfig:
    # Mux (mediaserver/backends/mux.py): an access token with Mux Video read+write, the webhook signing secret,
    # and a URL signing key (its id and base64 private key, as the dashboard gives them) for private streams.
    # Each is also read from the environment (MUX_TOKEN_ID, MUX_TOKEN_SECRET, MUX_WEBHOOK_SECRET,
    # MUX_SIGNING_KEY_ID, MUX_SIGNING_PRIVATE_KEY), which wins; none is ever stored in the database.
    token_id: str = ""
    token_secret: str = ""
    webhook_secret: str = ""
    signing_key_id: str = ""
    signing_private_key: str = ""
    base_url: str = "https://api.mux.com"
    # Where encoders send and viewers play (Mux's global endpoints).
    rtmp_url: str = "rtmp://global-live.mux.com:5222/app"
    rtmps_url: str = "rtmps://global-live.mux.com:443/app"
    srt_host: str = "global-live.mux.com:6001"
    stream_host: str = "https://stream.mux.com"
    # Seconds Mux waits for the encoder to come back before it ends the broadcast.
    reconnect_window: float = 60.0
    # Analytics (mediaserver/platform_viewers.py): ask Mux Data's current-concurrent-viewers for a live Mux stream
    # (the access token needs Mux Data read), filtered by this dimension: video_series or video_id (our stream id,
    # as our player's mux-embed metadata sets it; video_series is a documented Monitoring dimension), or
    # live_stream_id / playback_id (Mux's ids, which Mux Player reports; check your Mux account accepts them).
    data_viewers: bool = True
    data_filter: str = "video_series"
    # The Mux Data environment key our watch and embed pages give mux-embed (MUX_DATA_ENV_KEY); empty: no beacon.
    data_env_key: str = ""
    # Where mux-embed sends its beacons; empty: Mux's own (https://<env key>.litix.io). A custom collection
    # domain (e.g. "data.example.org") is reached over https; "localhost:PORT" over http (tests).
    data_beacon_domain: str = ""

    def env(self, name: str) -> str:
        """A credential: the environment's MUX_NAME, else this file's value."""
        return os.environ.get(f"MUX_{name.upper()}") or str(getattr(self, name))

    def configured(self) -> bool:
        return bool(self.env("token_id") and self.env("token_secret"))


@dataclass
class AccessConfig:
    # Password unlocks (scrypt) run on their own small pool so a burst of guesses never delays playback.
    password_workers: int = 2
    # Password attempts per client address per minute on a protected stream's unlock.
    unlock_attempts_per_minute: int = 10


@dataclass
class ChatConfig:
    # Messages one viewer (one browser, member or staff token) may send per 10 s.
    messages_per_viewer: int = 5
    # Messages from one address per 10 s, all viewers together: sized for a whole congregation behind
    # one church Wi-Fi or proxy (the per-viewer limit does the real work).
    messages_per_address: int = 200
    # Reactions one viewer may send per 5 s.
    reactions_per_viewer: int = 10


@dataclass
class AnalyticsConfig:
    # How often the concurrent viewers of each live stream are recorded (the console's viewers-over-time chart).
    sample_seconds: float = 15.0
    # A viewer of the HLS playlists (any player) has left after this many seconds without a request.
    hls_idle_seconds: float = 30.0


@dataclass
class ConsoleConfig:
    # A console sign-in (the session cookie) lasts at most this long, and ends sooner after this much idle time
    # (the go-live panel keeps itself active while open, so a two-hour service never signs a volunteer out).
    session_hours: float = 12.0
    idle_minutes: float = 120.0


@dataclass
class ClusterConfig:
    # Several server processes (or hosts) sharing chat and events through Redis, e.g. "redis://10.0.0.5:6379/0".
    # Empty: one process, nothing shared, no Redis needed.
    redis_url: str = ""
    # This process's name in the cluster (logs, room ownership); empty: a random one at each start.
    process_id: str = ""
    # May this process own chat rooms (run their moderation, history and counts for every process)?
    room_owner: bool = True
    # A room's owner holds a lease this long and renews it this often; a dead owner is replaced after the lease.
    lease_seconds: float = 5.0
    renew_seconds: float = 1.5
    # A file holding the secret (16+ characters) shared with web workers on other hosts (`mediaserver web-worker
    # --origin-url`): on the origin, requests carrying it may speak for their clients (X-Forwarded-For) and ask
    # /internal/chat/admit; on a remote worker, the secret it sends. Empty: no remote workers.
    worker_secret_file: str = ""


@dataclass
class IvsConfig:
    # The AWS IVS back-end (mediaserver/backends/ivs.py), on when enabled (or access_key_id is set). Credentials:
    # these two, or the usual AWS chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, ~/.aws, an instance role).
    enabled: bool = False
    region: str = "us-east-1"
    access_key_id: str = ""
    secret_access_key: str = ""
    endpoint_url: str = ""              # a stand-in for IVS (tests); empty: AWS itself
    channel_type: str = "STANDARD"      # IVS channel type: BASIC, STANDARD, ADVANCED_SD, ADVANCED_HD
    # An IVS recording configuration (it names the S3 bucket); needed for recorded IVS streams.
    recording_configuration_arn: str = ""
    # Where that bucket is served (e.g. a CloudFront address): recordings play from BASE/<prefix>/media/hls/master.m3u8.
    recording_base_url: str = ""
    # Private streams: a P-384 key pair for IVS playback authorization. The PEM private key in this file (or in
    # $MEDIASERVER_IVS_PLAYBACK_PRIVATE_KEY); its public half is imported into IVS on first use.
    playback_private_key_file: str = ""
    playback_origin: str = "*"          # the aws:access-control-allow-origin claim of playback tokens
    # EventBridge API destination -> POST /hooks/ivs: its connection sends this header with this secret
    # (or $MEDIASERVER_IVS_NOTIFICATION_SECRET). Empty: IVS notifications are refused.
    notification_header: str = "X-Mediaserver-Secret"
    notification_secret: str = ""
    # Analytics: read a live channel's ConcurrentViews from CloudWatch (needs cloudwatch:GetMetricData).
    viewers_from_cloudwatch: bool = True

    def configured(self) -> bool:
        return self.enabled or bool(self.access_key_id)


@dataclass
class BackendsConfig:
    # What this server does with streams on a cloud back-end (Mux, IVS). copy_recordings: copy each platform
    # recording into our own store (mediaserver/cloud_recordings.py), so the sermon library, podcast, clips and
    # chat replay work as for our own recordings; a failed copy is retried copy_attempts times in all,
    # copy_retry_seconds apart (doubling), then recording.ready goes out anyway with the reason in `error`.
    copy_recordings: bool = True
    copy_attempts: int = 3
    copy_retry_seconds: float = 10.0


@dataclass
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    rtmp: RtmpConfig = field(default_factory=RtmpConfig)
    whip: WhipConfig = field(default_factory=WhipConfig)
    srt: SrtConfig = field(default_factory=SrtConfig)
    transcode: TranscodeConfig = field(default_factory=TranscodeConfig)
    hls: HlsConfig = field(default_factory=HlsConfig)
    stream: StreamConfig = field(default_factory=StreamConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    webhooks: WebhooksConfig = field(default_factory=WebhooksConfig)
    simulcast: SimulcastConfig = field(default_factory=SimulcastConfig)
    access: AccessConfig = field(default_factory=AccessConfig)
    chat: ChatConfig = field(default_factory=ChatConfig)
    analytics: AnalyticsConfig = field(default_factory=AnalyticsConfig)
    console: ConsoleConfig = field(default_factory=ConsoleConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    mux: MuxConfig = field(default_factory=MuxConfig)
    ivs: IvsConfig = field(default_factory=IvsConfig)
    backends: BackendsConfig = field(default_factory=BackendsConfig)

    @property
    def data_path(self) -> Path:
        return Path(self.server.data_dir)

    @property
    def admin_token(self) -> str:
        return os.environ.get("MEDIASERVER_ADMIN_TOKEN") or self.server.admin_token

    def validate(self) -> None:
        if self.hls.segment_duration < 0.5 or self.hls.segment_duration > 12:
            raise ConfigError(f"hls.segment_duration must be 0.5..12 s, got {self.hls.segment_duration}")
        if self.hls.dvr_window < 0:
            raise ConfigError(f"hls.dvr_window must be >= 0, got {self.hls.dvr_window}")
        if self.hls.storyboard_interval < 1:
            raise ConfigError(f"hls.storyboard_interval must be >= 1 s, got {self.hls.storyboard_interval}")
        if self.stream.reconnect_window < 0:
            raise ConfigError(f"stream.reconnect_window must be >= 0, got {self.stream.reconnect_window}")
        if self.storage.reserve_mb < 0:
            raise ConfigError(f"storage.reserve_mb must be >= 0, got {self.storage.reserve_mb}")
        for name in ("keep_segments_days", "keep_recordings_days"):
            if getattr(self.storage, name) < 0:
                raise ConfigError(f"storage.{name} must be >= 0 (0 = forever), got {getattr(self.storage, name)}")
        if self.storage.retention_interval <= 0:
            raise ConfigError(f"storage.retention_interval must be > 0, got {self.storage.retention_interval}")
        if self.storage.backend not in ("local", "s3"):
            raise ConfigError(f'storage.backend must be "local" or "s3", got {self.storage.backend!r}')
        if self.storage.backend == "s3" and not self.storage.s3_bucket:
            raise ConfigError('storage.backend = "s3" needs storage.s3_bucket')
        if not 10 <= self.storage.s3_url_seconds <= 7 * 86400:
            raise ConfigError(f"storage.s3_url_seconds must be 10..604800, got {self.storage.s3_url_seconds}")
        if self.server.public_url:
            parts = urlsplit(self.server.public_url)
            if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
                raise ConfigError(f"server.public_url must be like https://stream.mychurch.org, got {self.server.public_url!r}")
        if bool(self.server.tls_cert) != bool(self.server.tls_key):
            raise ConfigError("server.tls_cert and server.tls_key must be set together (or both left empty)")
        for name in ("messages_per_viewer", "messages_per_address", "reactions_per_viewer"):
            if getattr(self.chat, name) < 1:
                raise ConfigError(f"chat.{name} must be >= 1, got {getattr(self.chat, name)}")
        if self.hls.live_edge_segments < 3:
            # RFC 8216 6.2.2: a live playlist must span at least three target durations.
            raise ConfigError(f"hls.live_edge_segments must be >= 3, got {self.hls.live_edge_segments}")
        if not 0.1 <= self.hls.part_target <= self.hls.segment_duration / 2:
            raise ConfigError(f"hls.part_target must be between 0.1 s and half of hls.segment_duration "
                              f"({self.hls.segment_duration / 2:g} s), got {self.hls.part_target}")
        if not (1 <= self.srt.port and self.srt.ports >= 1 and self.srt.port + self.srt.ports - 1 <= 65535):
            raise ConfigError(f"srt.port and srt.ports must give ports within 1..65535, got {self.srt.port} "
                              f"and {self.srt.ports}")
        if not 0 <= self.srt.latency_ms <= 60_000 or not 0.1 <= self.srt.probe_seconds <= 30 or self.srt.listen_days < 0:
            raise ConfigError("srt.latency_ms must be 0..60000, srt.probe_seconds 0.1..30 and srt.listen_days >= 0")
        if not (0.1 <= self.analytics.sample_seconds <= 3600 and 1 <= self.analytics.hls_idle_seconds <= 3600):
            raise ConfigError(f"analytics.sample_seconds must be 0.1..3600 and analytics.hls_idle_seconds 1..3600, got "
                              f"{self.analytics.sample_seconds} and {self.analytics.hls_idle_seconds}")
        if self.mux.data_filter not in ("live_stream_id", "playback_id", "video_id", "video_series"):
            raise ConfigError("mux.data_filter must be live_stream_id, playback_id, video_id or video_series, got "
                              f"{self.mux.data_filter!r}")
        if self.whip.max_sessions < 0 or self.whip.keyframe_interval < 0:
            raise ConfigError("whip.max_sessions and whip.keyframe_interval must be >= 0")
        if not (0 < self.console.session_hours <= 24 * 30 and 0 < self.console.idle_minutes):
            raise ConfigError("console.session_hours must be in (0, 720] and console.idle_minutes > 0")
        if not 0.2 <= self.cluster.renew_seconds < self.cluster.lease_seconds <= 600:
            raise ConfigError("cluster.renew_seconds must be >= 0.2 and below cluster.lease_seconds (at most 600)")
        for address in self.transcode.remote_workers:
            host, sep, port = str(address).rpartition(":")
            if not isinstance(address, str) or not sep or not host or not port.isdigit():
                raise ConfigError(f"transcode.remote_workers: {address!r} is not host:port")
        if self.transcode.remote_workers and not self.transcode.remote_secret_file:
            raise ConfigError("transcode.remote_workers needs transcode.remote_secret_file (the shared secret)")
        if self.transcode.top_rung not in ("auto", "passthrough", "encode"):
            raise ConfigError(f'transcode.top_rung must be "auto", "passthrough" or "encode", '
                              f"got {self.transcode.top_rung!r}")
        if not self.transcode.renditions:
            raise ConfigError("transcode.renditions must list at least one rendition")
        names = [r.name for r in self.transcode.renditions]
        if len(set(names)) != len(names):
            raise ConfigError(f"transcode.renditions names must be unique, got {names}")
        for r in self.transcode.renditions:
            if not r.name.replace("_", "").replace("-", "").isalnum():
                raise ConfigError(f"rendition name {r.name!r} may use letters, digits, - and _ only")
            if r.height < 64 or r.height % 2:
                raise ConfigError(f"rendition {r.name}: height must be an even number >= 64, got {r.height}")
            if r.video_bitrate < 50_000:
                raise ConfigError(f"rendition {r.name}: video_bitrate {r.video_bitrate} is below 50000 bit/s")


def _build(cls: type, data: dict[str, Any], where: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"[{where}] must be a table")
    known = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in known:
            raise ConfigError(f"unknown setting {where + '.' if where else ''}{key}")
        f = known[key]
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default  # type: ignore[misc]
        if key == "renditions":
            if not isinstance(value, list):
                raise ConfigError(f"{where}.renditions must be an array of tables")
            kwargs[key] = [_build(Rendition, item, f"{where}.renditions") for item in value]
        elif dataclasses.is_dataclass(default):
            kwargs[key] = _build(type(default), value, f"{where}.{key}" if where else key)
        else:
            expected = type(default) if default is not dataclasses.MISSING else None
            if expected is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if expected is not None and not isinstance(value, expected):
                raise ConfigError(f"{where}.{key} must be {expected.__name__}, got {value!r}")
            kwargs[key] = value
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"[{where}]: {exc}") from exc


def load_config(path: str | os.PathLike[str] | None) -> Config:
    """Read config.toml (or the defaults when path is None or missing)."""
    if path is None or not Path(path).exists():
        if path is not None and Path(path).name != "config.toml":
            raise ConfigError(f"config file {path} not found")
        config = Config()
    else:
        try:
            with open(path, "rb") as f:
                data = tomllib.load(f)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: {exc}") from exc
        config = _build(Config, data, "")
    config.validate()
    return config
