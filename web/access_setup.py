"""What every application of ours needs to decide who is asking (the origin's and a web worker's alike): the
bad-token throttle, the playback signer, the access policy over the database, console sessions and the
stream-password checker. One function, so both decide access from the same parts."""
from __future__ import annotations

from aiohttp import web

from mediaserver.access import AccessPolicy
from mediaserver.chat.hub import ChatHub
from mediaserver.config import Config
from mediaserver.console_sessions import ConsoleSessions
from mediaserver.db import Database
from mediaserver.passwords import PasswordChecker
from mediaserver.playback_tokens import PlaybackSigner
from web import guard
from web.auth import THROTTLE, BadTokenThrottle
from web.console_auth import CONSOLE_SESSIONS
from web.keys import ADMIN_TOKEN, CHAT, CONFIG, DB, PASSWORDS, SIGNER


def install_access(app: web.Application, config: Config, db: Database, admin_token: str, chat: ChatHub) -> None:
    app[THROTTLE] = BadTokenThrottle()
    app[SIGNER] = PlaybackSigner.from_data_dir(config.data_path)
    app[CONFIG] = config
    app[DB] = db
    app[ADMIN_TOKEN] = admin_token
    app[CHAT] = chat
    guard.install(app, AccessPolicy(app[SIGNER], admin_token, db.token_org))
    app[CONSOLE_SESSIONS] = ConsoleSessions(config.data_path / "mediaserver.db", config.console.session_hours,
                                            config.console.idle_minutes)
    app[PASSWORDS] = PasswordChecker(config.access.password_workers, config.access.unlock_attempts_per_minute)

    async def close_password_pool(app: web.Application) -> None:
        app[PASSWORDS].close()

    app.on_cleanup.append(close_password_pool)
