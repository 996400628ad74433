"""The `mediaserver` command: serve, and manage streams from the shell."""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys

from mediaserver.config import Config, ConfigError, load_config
from mediaserver.db import Database


def add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=None, help="config file (default: ./config.toml if present)")
    parser.add_argument("--data-dir", default=None, help="where the database and media live (default ./data)")
    parser.add_argument("--http-port", type=int, default=None, help="HTTP port (default 8080)")
    parser.add_argument("--rtmp-port", type=int, default=None, help="RTMP port (default 1935)")
    parser.add_argument("--host", default=None, help="address to listen on (default 0.0.0.0)")
    parser.add_argument("--public-host", default=None, help="host name encoders and viewers use to reach this box")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mediaserver", description="Live streaming server for churches.")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the server (HTTP + RTMP)")
    add_common(serve)
    serve.add_argument("--log-level", default="INFO")
    streams = sub.add_parser("streams", help="create and list streams")
    streams_sub = streams.add_subparsers(dest="action", required=True)
    create = streams_sub.add_parser("create", help="create a stream and print its RTMP URL and key")
    add_common(create)
    create.add_argument("--title", required=True)
    create.add_argument("--json", action="store_true", help="print JSON")
    listing = streams_sub.add_parser("list", help="list streams")
    add_common(listing)
    listing.add_argument("--json", action="store_true", help="print JSON")
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
    return parser


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
    if args.host:
        config.server.host = args.host
    if args.public_host:
        config.server.public_host = args.public_host
    return config


def urls(config: Config, stream_id: str) -> dict[str, str]:
    host = config.server.public_host or "localhost"
    rtmp_port = "" if config.server.rtmp_port == 1935 else f":{config.server.rtmp_port}"
    http_port = "" if config.server.http_port == 80 else f":{config.server.http_port}"
    return {
        "rtmp_url": f"rtmp://{host}{rtmp_port}/{config.rtmp.app}",
        "playback_url": f"http://{host}{http_port}/hls/{stream_id}/master.m3u8",
        "watch_url": f"http://{host}{http_port}/watch/{stream_id}",
    }


def cmd_streams(args: argparse.Namespace, config: Config) -> int:
    from mediaserver.server import database_path

    db = Database(database_path(config))
    if args.action == "create":
        row, key = db.create_stream(args.title)
        info = {"id": row["id"], "title": row["title"], "status": row["status"], "stream_key": key, **urls(config, row["id"])}
        if args.json:
            print(json.dumps(info, indent=2))
        else:
            print(f"Created stream {row['id']}: {row['title']}")
            print(f"  OBS → Settings → Stream → Service: Custom")
            print(f"  Server:      {info['rtmp_url']}")
            print(f"  Stream key:  {key}   (shown only now; keep it secret)")
            print(f"  Watch:       {info['watch_url']}")
            print(f"  HLS:         {info['playback_url']}")
            if not config.server.public_host:
                print("  (Replace localhost with this machine's address, or set server.public_host in config.toml.)")
        return 0
    rows = db.streams()
    if args.json:
        print(json.dumps([{k: r[k] for k in ("id", "title", "status", "actual_start", "actual_end")} | urls(config, r["id"]) for r in rows], indent=2))
    else:
        for r in rows:
            print(f"{r['id']}  {r['status']:<9}  {r['title']}")
        if not rows:
            print("No streams yet. Create one: mediaserver streams create --title \"Sunday Service\"")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = resolve_config(args)
        config.validate()
    except ConfigError as exc:
        print(f"mediaserver: config error: {exc}", file=sys.stderr)
        return 2
    if args.command == "streams":
        return cmd_streams(args, config)
    if args.command == "orgs":
        return cmd_orgs(args, config)
    if args.command == "tokens":
        return cmd_tokens(args, config)
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,
    )
    from mediaserver.server import serve_forever

    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:
        loop_factory = None
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(serve_forever(config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
