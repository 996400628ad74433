"""The `mediaserver` command: serve, and manage streams from the shell.

Stream and series commands call the running server's API (so organization defaults, webhooks and live sessions
apply); organizations and tokens are set up in the database directly, before the server runs.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from mediaserver.config import Config, ConfigError, load_config
from mediaserver.db import Database


def add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=None, help="config file (default: ./config.toml if present)")
    parser.add_argument("--data-dir", default=None, help="where the database and media live (default ./data)")
    parser.add_argument("--http-port", type=int, default=None, help="HTTP port (default 8080)")
    parser.add_argument("--rtmp-port", type=int, default=None, help="RTMP port (default 1935)")
    parser.add_argument("--srt-port", type=int, default=None,
                        help="first SRT port (UDP; default 8890): each stream gets one of [srt] ports from here")
    parser.add_argument("--host", default=None, help="address to listen on (default 0.0.0.0)")
    parser.add_argument("--public-url", default=None, help="URL people use to reach this box, e.g. https://stream.mychurch.org")
    parser.add_argument("--public-host", default=None, help="(deprecated: use --public-url) host name of this box")


def add_client(parser: argparse.ArgumentParser) -> None:
    """Flags of the commands that talk to the running server's API."""
    add_common(parser)
    parser.add_argument("--server", default=None,
                        help="URL of the running server (default $MEDIASERVER_URL, else http://127.0.0.1:HTTP_PORT)")
    parser.add_argument("--json", action="store_true", help="print the API's JSON answer")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mediaserver", description="Live streaming server for churches.")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the server (HTTP + RTMP)")
    add_common(serve)
    serve.add_argument("--log-level", default="INFO")
    serve.add_argument("--workers", type=int, default=1,
                       help="processes sharing the HTTP port (default 1); more than 1 needs [cluster] redis_url")
    worker = sub.add_parser("web-worker", help="one web worker: started by `serve --workers N`, or on another host "
                                                "with --origin-url (chat sockets and events; the rest is forwarded)")
    add_common(worker)
    worker.add_argument("--log-level", default="INFO")
    worker.add_argument("--origin-socket", default=None, help="(same host) the origin's Unix socket")
    worker.add_argument("--origin-url", default=None,
                        help="(another host) the origin's HTTP address, e.g. http://10.0.0.2:8080")
    worker.add_argument("--worker-secret-file", default=None,
                        help="with --origin-url: the secret shared with the origin (default: [cluster] "
                             "worker_secret_file)")
    worker.add_argument("--worker-index", type=int, default=1)
    box = sub.add_parser("transcode-worker",
                         help="run transcode jobs for a server on another host (docs/transcode-protocol.md)")
    box.add_argument("--listen", required=True, help="HOST:PORT to accept servers on, e.g. 0.0.0.0:7500")
    box.add_argument("--secret-file", required=True, help="file holding the secret shared with the servers")
    box.add_argument("--scratch", default=None, help="working folder for jobs (default: a temporary folder)")
    box.add_argument("--max-jobs", type=int, default=2, help="jobs (live connections) at a time (default 2)")
    box.add_argument("--log-level", default="INFO")
    streams = sub.add_parser("streams", help="manage streams (through the running server)")
    streams_sub = streams.add_subparsers(dest="action", required=True)
    create = streams_sub.add_parser("create", help="create a stream and print its RTMP URL and key")
    add_client(create)
    create.add_argument("--title", required=True)
    create.add_argument("--description", default=None)
    create.add_argument("--scheduled-start", default=None, help="e.g. 2026-12-06T16:30:00Z")
    create.add_argument("--visibility", choices=["PUBLIC", "MEMBERS_ONLY", "PRIVATE"], default=None)
    listing = streams_sub.add_parser("list", help="list streams")
    add_client(listing)
    listing.add_argument("--state", choices=["live", "upcoming", "past", "all"], default="all")
    for action, text in (("show", "show one stream"), ("end", "end the broadcast now (skips the reconnect window)"),
                         ("rotate-key", "issue a new stream key (shown once); the old one stops working"),
                         ("delete", "delete a stream and all its media (not while on air)")):
        one = streams_sub.add_parser(action, help=text)
        add_client(one)
        one.add_argument("stream_id", metavar="ID")
        if action == "rotate-key":
            one.add_argument("--disconnect", action="store_true", help="also cut a broadcast live on the old key")
    series = sub.add_parser("series", help="recurring services (through the running server)")
    series_sub = series.add_subparsers(dest="action", required=True)
    series_create = series_sub.add_parser("create", help="create a recurring series; prints the key its services share")
    add_client(series_create)
    series_create.add_argument("--title", required=True)
    series_create.add_argument("--rrule", required=True, help="e.g. FREQ=WEEKLY;BYDAY=SU")
    series_create.add_argument("--start-time", required=True, help="local HH:MM, e.g. 10:30")
    series_create.add_argument("--duration", type=int, required=True, help="minutes")
    series_create.add_argument("--timezone", required=True, help="e.g. America/Chicago")
    series_create.add_argument("--dtstart", default=None, help="first day, YYYY-MM-DD (default today)")
    orgs = sub.add_parser("orgs", help="organizations (a church, or one campus)")
    orgs_sub = orgs.add_subparsers(dest="action", required=True)
    org_create = orgs_sub.add_parser("create", help="create an organization")
    add_common(org_create)
    org_create.add_argument("--slug", required=True)
    org_create.add_argument("--name", required=True)
    org_create.add_argument("--timezone", default="UTC")
    org_list = orgs_sub.add_parser("list", help="list organizations")
    add_common(org_list)
    tokens = sub.add_parser("tokens", help="API tokens")
    tokens_sub = tokens.add_subparsers(dest="action", required=True)
    token_create = tokens_sub.add_parser("create", help="create an API token for an organization (shown once)")
    add_common(token_create)
    token_create.add_argument("--org", required=True, help="organization slug or id")
    token_create.add_argument("--name", default="", help="a label, e.g. 'website'")
    backends = sub.add_parser("backends", help="video platforms (Mux, AWS IVS) a stream can run on")
    backends_sub = backends.add_subparsers(dest="action", required=True)
    add_common(backends_sub.add_parser("check", help="call each configured platform with its credentials and "
                                                     "print what is wrong"))
    return parser


def cmd_backends(args: argparse.Namespace, config: Config) -> int:
    """`mediaserver backends check`: one cheap authenticated call per configured back-end; exit 1 on problems."""
    import asyncio
    import secrets

    from mediaserver.backends.registry import build_registry
    from mediaserver.playback_tokens import PlaybackSigner

    from mediaserver.platform_viewers import build_platform_viewers

    registry = build_registry(config, PlaybackSigner(secrets.token_bytes(32)))
    results = asyncio.run(registry.check())
    viewers = build_platform_viewers(config)  # analytics' viewer counts need their own permissions
    for name, source in (viewers.sources.items() if viewers is not None else ()):
        results.setdefault(name, []).extend(source.check())
    for name, problems in results.items():
        print(f"{name}: {'ok' if not problems else 'problems'}")
        for problem in problems:
            print(f"  - {problem}")
    if list(results) == ["builtin"]:
        print("(no cloud back-end configured: set [mux] or [ivs] in config.toml, or their environment variables)")
    return 1 if any(results.values()) else 0


def cmd_orgs(args: argparse.Namespace, config: Config) -> int:
    import re
    from zoneinfo import ZoneInfo

    from mediaserver.server import database_path

    db = Database(database_path(config))
    if args.action == "create":
        if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,62}", args.slug):
            print("mediaserver: --slug may use lowercase letters, digits and -", file=sys.stderr)
            return 2
        try:
            ZoneInfo(args.timezone)
        except (KeyError, ValueError):
            print(f"mediaserver: unknown time zone {args.timezone!r}", file=sys.stderr)
            return 2
        if db.org(args.slug):
            print(f"mediaserver: organization {args.slug!r} already exists", file=sys.stderr)
            return 2
        row = db.create_org(args.slug, args.name, args.timezone)
        print(f"Created organization {row['slug']} ({row['id']}): {row['name']}")
        return 0
    for row in db.orgs():
        print(f"{row['id']}  {row['slug']:<20} {row['name']}")
    return 0


def cmd_tokens(args: argparse.Namespace, config: Config) -> int:
    from mediaserver.server import database_path

    db = Database(database_path(config))
    org = db.org(args.org)
    if org is None:
        print(f"mediaserver: no organization {args.org!r} (see: mediaserver orgs list)", file=sys.stderr)
        return 2
    _row, token = db.create_token(org["id"], args.name)
    print(token)
    print(f"(API token for {org['slug']}; shown only now. Send it as: Authorization: Bearer <token>)", file=sys.stderr)
    return 0


def resolve_config(args: argparse.Namespace) -> Config:
    config = load_config(args.config if args.config else "config.toml")
    if args.data_dir:
        config.server.data_dir = args.data_dir
    if args.http_port is not None:
        config.server.http_port = args.http_port
    if args.rtmp_port is not None:
        config.server.rtmp_port = args.rtmp_port
    if args.srt_port is not None:
        config.srt.port = args.srt_port
    if args.host:
        config.server.host = args.host
    if args.public_host:
        config.server.public_host = args.public_host
    if args.public_url:
        config.server.public_url = args.public_url
    return config


class CliError(Exception):
    """A command that could not be carried out; the message is printed as it is."""


class ApiClient:
    """The running server's HTTP API, as the CLI uses it: the same code paths (organization defaults, webhooks,
    the live session) as any other API client."""

    def __init__(self, base_url: str, token: str, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base_url + path, data=data, method=method)
        request.add_header("Authorization", f"Bearer {self.token}")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            try:
                answer = json.loads(exc.read() or b"null")
            except ValueError:
                answer = None
            if isinstance(answer, dict) and "error" in answer:
                details = answer.get("details")
                raise CliError(f"{answer['error']}" + (f": {json.dumps(details)}" if details else "")) from None
            raise CliError(f"{method} {path}: HTTP {exc.code}") from None
        except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
            reason = getattr(exc, "reason", exc)
            raise CliError(f"the server is not running at {self.base_url} ({reason}); start it with "
                           "`mediaserver serve`, or name it with --server URL") from None
        return json.loads(raw) if raw else None


def server_url(args: argparse.Namespace, config: Config) -> str:
    """Where the running server listens: --server, $MEDIASERVER_URL, else this machine's HTTP port."""
    if getattr(args, "server", None):
        return str(args.server)
    if os.environ.get("MEDIASERVER_URL"):
        return os.environ["MEDIASERVER_URL"]
    host = config.server.host
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    elif ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{config.server.http_port}"


def client_token(config: Config) -> str:
    """$MEDIASERVER_ADMIN_TOKEN, else server.admin_token, else the one the server generated into data/admin_token."""
    if config.admin_token:
        return config.admin_token
    path = config.data_path / "admin_token"
    try:
        return path.read_text().strip()
    except OSError:
        raise CliError(f"no admin token: set $MEDIASERVER_ADMIN_TOKEN, or run the server once so it writes {path} "
                       "(use --data-dir or --config to find it)") from None


def print_stream(view: dict[str, Any], key: str | None = None) -> None:
    print(f"Stream {view['id']}: {view['title']}")
    print(f"  Status:      {view['status']}" + (f"  ({view['error']})" if view.get("error") else ""))
    for label, name in (("Scheduled", "scheduled_start"), ("Started", "actual_start"), ("Ended", "actual_end")):
        if view.get(name):
            print(f"  {label + ':':<12} {view[name]}")
    print(f"  Server:      {view['rtmp_url']}")
    if key:
        print(f"  Stream key:  {key}   (shown only now; keep it secret)")
    print(f"  Watch:       {view['watch_url']}")
    print(f"  HLS:         {view['playback_url']}")
    recording = view.get("recording")
    if recording:
        print(f"  Recording:   {recording['status']}, {recording['duration']:.0f} s, {recording['playback_url']}")
        if recording.get("mp4_url"):
            print(f"  MP4:         {recording['mp4_url']}")
    if "storage_bytes" in view:
        print(f"  Storage:     {view['storage_bytes'] / 1e6:.1f} MB")


def cmd_streams(args: argparse.Namespace, config: Config) -> int:
    api = ApiClient(server_url(args, config), client_token(config))
    if args.action == "create":
        body: dict[str, Any] = {"title": args.title}
        for name in ("description", "scheduled_start", "visibility"):
            if getattr(args, name) is not None:
                body[name] = getattr(args, name)
        view = api.call("POST", "/api/streams", body)
        if args.json:
            print(json.dumps(view, indent=2))
        else:
            print("Created. In OBS: Settings → Stream → Service: Custom, then Server and Stream key below.")
            print_stream(view, view.get("stream_key"))
            host = urllib.parse.urlsplit(view["watch_url"]).hostname or ""
            if host in ("127.0.0.1", "localhost", "::1"):
                print(f"  ({host} is this machine: set server.public_url in config.toml, e.g. "
                      "\"https://stream.mychurch.org\", so the URLs work from other machines.)")
        return 0
    if args.action == "list":
        views: list[dict[str, Any]] = []
        offset: int | None = 0
        while offset is not None:
            page = api.call("GET", f"/api/streams?state={args.state}&limit=100&offset={offset}")
            views += page["streams"]
            offset = page["next_offset"]
        if args.json:
            print(json.dumps(views, indent=2))
        else:
            for v in views:
                print(f"{v['id']}  {v['status']:<9}  {v['title']}")
            if not views:
                print("No streams yet. Create one: mediaserver streams create --title \"Sunday Service\"")
        return 0
    path = f"/api/streams/{urllib.parse.quote(args.stream_id, safe='')}"
    if args.action == "delete":
        api.call("DELETE", path)
        if not args.json:
            print(f"Deleted stream {args.stream_id} and its media.")
        else:
            print(json.dumps({"deleted": args.stream_id}))
        return 0
    if args.action == "show":
        view = api.call("GET", path)
    elif args.action == "end":
        view = api.call("POST", path + "/end")
    else:  # rotate-key
        view = api.call("POST", path + "/rotate-key", {"disconnect": bool(args.disconnect)})
    if args.json:
        print(json.dumps(view, indent=2))
    else:
        print_stream(view, view.get("stream_key"))
    return 0


def cmd_series(args: argparse.Namespace, config: Config) -> int:
    api = ApiClient(server_url(args, config), client_token(config))
    body: dict[str, Any] = {"title": args.title, "rrule": args.rrule, "start_time": args.start_time,
                            "duration": args.duration, "timezone": args.timezone}
    if args.dtstart:
        body["dtstart"] = args.dtstart
    series = api.call("POST", "/api/series", body)
    if args.json:
        print(json.dumps(series, indent=2))
        return 0
    print(f"Created series {series['id']}: {series['title']} ({series['rrule']} at {series['start_time']} "
          f"{series['timezone']}, {series['duration']} min, from {series['dtstart']})")
    print(f"  Stream key:  {series['stream_key']}   (shared by every service; shown only now)")
    print("  Its services appear in: mediaserver streams list --state upcoming")
    return 0


def cmd_transcode_worker(args: argparse.Namespace) -> int:
    """A worker box: no config file, no database; the shared secret is the whole of its setup."""
    import tempfile
    from pathlib import Path

    from transcode.remote_protocol import read_secret
    from transcode.remote_server import WorkerBoxSettings, parse_listen, run_worker_box

    logging.basicConfig(level=getattr(logging, str(args.log_level).upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    try:
        secret = read_secret(args.secret_file)
        parse_listen(args.listen)
    except ValueError as exc:
        print(f"mediaserver transcode-worker: {exc}", file=sys.stderr)
        return 2
    if args.max_jobs < 1:
        print("mediaserver transcode-worker: --max-jobs must be 1 or more", file=sys.stderr)
        return 2
    scratch = Path(args.scratch) if args.scratch else Path(tempfile.gettempdir()) / "mediaserver-transcode"
    try:
        asyncio.run(run_worker_box(args.listen, WorkerBoxSettings(secret, scratch, args.max_jobs)))
    except OSError as exc:  # the port is taken, the scratch folder can't be made
        print(f"mediaserver transcode-worker: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "transcode-worker":
        return cmd_transcode_worker(args)
    try:
        config = resolve_config(args)
        config.validate()
    except ConfigError as exc:
        print(f"mediaserver: config error: {exc}", file=sys.stderr)
        return 2
    try:
        if args.command == "streams":
            return cmd_streams(args, config)
        if args.command == "series":
            return cmd_series(args, config)
    except CliError as exc:
        print(f"mediaserver: {exc}", file=sys.stderr)
        return 1
    if args.command == "orgs":
        return cmd_orgs(args, config)
    if args.command == "tokens":
        return cmd_tokens(args, config)
    if args.command == "backends":
        return cmd_backends(args, config)
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,
    )
    from mediaserver.server import serve_forever

    workers = getattr(args, "workers", 1)
    if workers < 1:
        print("mediaserver: --workers must be 1 or more", file=sys.stderr)
        return 2
    if workers > 1 and not config.cluster.redis_url:
        print("mediaserver: --workers above 1 needs Redis for the chat rooms and events across processes: "
              "set [cluster] redis_url in config.toml (e.g. \"redis://127.0.0.1:6379/0\")", file=sys.stderr)
        return 2
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:
        loop_factory = None
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        try:
            if args.command == "web-worker" and args.origin_url:
                from mediaserver.web_worker import serve_remote_web_worker
                from web.worker_secret import read_secret

                secret_file = args.worker_secret_file or config.cluster.worker_secret_file
                if not secret_file:
                    raise ConfigError("--origin-url needs --worker-secret-file (or [cluster] worker_secret_file)")
                runner.run(serve_remote_web_worker(config, args.origin_url, read_secret(secret_file)))
            elif args.command == "web-worker":
                from mediaserver.web_worker import serve_web_worker

                if not args.origin_socket:
                    raise ConfigError("web-worker needs --origin-socket (same host) or --origin-url (another host)")
                runner.run(serve_web_worker(config, args.origin_socket, args.worker_index))
            else:
                runner.run(serve_forever(config, workers=workers, argv=list(argv if argv is not None else sys.argv[1:])))
        except ConfigError as exc:  # found only when starting, e.g. a certificate that can't be loaded
            print(f"mediaserver: config error: {exc}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
