"""Typed application keys shared by the web handlers."""
from __future__ import annotations

from aiohttp import web

from mediaserver.chat.hub import ChatHub
from mediaserver.config import Config
from mediaserver.db import Database
from mediaserver.passwords import PasswordChecker
from mediaserver.playback_tokens import PlaybackSigner
from mediaserver.sessions import StreamManager
from storage.local import LocalStore

CONFIG = web.AppKey("config", Config)
DB = web.AppKey("db", Database)
STORE = web.AppKey("store", LocalStore)
MANAGER = web.AppKey("manager", StreamManager)
ADMIN_TOKEN = web.AppKey("admin_token", str)
SIGNER = web.AppKey("playback_signer", PlaybackSigner)
PASSWORDS = web.AppKey("password_checker", PasswordChecker)
CHAT = web.AppKey("chat_hub", ChatHub)
