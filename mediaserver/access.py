"""Who may do what with a stream: the one decision every route asks (API objects, playlists, segments,
recordings, the watch page, the chat room and the event stream).

Sans-IO: callers hand in the credentials they found and the stream's row; the only lookup is the
organization of an API token, passed in as a function so the web layer can run it off the loop.
"""
from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from enum import Enum
from typing import Any, Callable

from mediaserver.playback_tokens import PlaybackGrant, PlaybackSigner, TokenError


class Role(str, Enum):
    ADMIN = "admin"          # the server admin token: every organization
    STAFF = "staff"          # an organization's API token: that organization's streams
    MEMBER = "member"        # a member token issued by an organization: its members-only streams
    VIEWER = "viewer"        # a playback token for one stream (issued by the API or a password unlock)
    ANONYMOUS = "anonymous"  # nothing, or nothing valid


@dataclass(frozen=True, slots=True)
class Caller:
    role: Role
    org_id: str | None = None        # STAFF and MEMBER: their organization
    name: str | None = None          # MEMBER: the name the church issued the token under
    viewer_id: str | None = None     # VIEWER: the viewer the playback token names, if any
    playback_token: str | None = None  # the canonical token to carry into playlist URIs
    problem: str | None = None       # why a presented credential was not accepted

    @property
    def staff(self) -> bool:
        return self.role in (Role.ADMIN, Role.STAFF)


ANONYMOUS = Caller(Role.ANONYMOUS)
ADMIN = Caller(Role.ADMIN)


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    status: int = 200      # 401: credentials needed, 403: the ones given don't reach this stream
    reason: str = ""


ALLOW = Decision(True)
# Viewer ids are signed for this scope; ':' never occurs in a stream id, so they can't pass as playback tokens.
VIEWER_SCOPE = "viewer:"
VIEWER_ID_TTL = 400 * 86400.0
# The cookie holding a browser's signed viewer id: set by the watch page and the room's handshake.
VIEWER_COOKIE = "ms_viewer"


def member_scope(org_id: str) -> str:
    """What a member token is signed for: membership of one organization (not one stream)."""
    return f"member:{org_id}"


class AccessPolicy:
    """Decides access from credentials. Every web route goes through an instance of this class."""

    def __init__(self, signer: PlaybackSigner, admin_token: str, token_org: Callable[[str], str | None]) -> None:
        self.signer = signer
        self._admin_token = admin_token.encode()
        self._token_org = token_org  # API token -> organization id (a database lookup; may block)

    # -- who is calling ------------------------------------------------------------------------------
    def admin_caller(self, token: str) -> Caller | None:
        """ADMIN if the token is the server's admin token, else None (ask api_caller); never blocks."""
        return ADMIN if hmac.compare_digest(token.encode(), self._admin_token) else None

    def api_caller(self, token: str | None) -> Caller:
        """The caller behind an API (bearer) token; blocking (database lookup)."""
        if not token:
            return ANONYMOUS
        if (admin := self.admin_caller(token)) is not None:
            return admin
        org_id = self._token_org(token)
        if org_id is None:
            return Caller(Role.ANONYMOUS, problem="invalid API token")
        return Caller(Role.STAFF, org_id=org_id)

    def stream_caller(self, stream: dict[str, Any], *, api_token: str | None = None,
                      token: str | None = None, token_may_be_api: bool = False) -> Caller:
        """The caller for one stream: an API token wins, else a playback or member token; blocking.

        token_may_be_api: `token` may also be a staff API token (the room's ?token=, kept for old clients).
        """
        if api_token:
            caller = self.api_caller(api_token)
            if caller.role is not Role.ANONYMOUS:
                return caller
            if not token:
                return caller
        if not token:
            return ANONYMOUS
        try:
            grant = self.signer.check(token, stream["id"])
            return Caller(Role.VIEWER, viewer_id=grant.viewer_id, playback_token=token)
        except TokenError as exc:
            stream_problem = str(exc)
        member = self.member(token, stream["org_id"])
        if member is not None:
            return Caller(Role.MEMBER, org_id=stream["org_id"], name=str(member.viewer_id or "Member"),
                          playback_token=token)
        if token_may_be_api and api_token is None:
            caller = self.api_caller(token)
            if caller.role is not Role.ANONYMOUS:
                return caller
        return Caller(Role.ANONYMOUS, problem=stream_problem)

    def member(self, token: str, org_id: str) -> PlaybackGrant | None:
        try:
            return self.signer.check(token, member_scope(org_id))
        except TokenError:
            return None

    # -- a browser's identity in the room -------------------------------------------------------------
    def new_viewer_token(self, ttl: float = VIEWER_ID_TTL) -> tuple[str, str]:
        """(signed token, viewer id) for a browser that has none yet; the page keeps the token."""
        viewer_id = secrets.token_hex(8)
        token, _ = self.signer.issue(VIEWER_SCOPE, ttl, viewer_id)
        return token, viewer_id

    def viewer_id(self, token: str | None) -> str | None:
        """The viewer id a token proves, or None (missing, forged, expired)."""
        if not token:
            return None
        try:
            grant = self.signer.check(token, VIEWER_SCOPE)
        except TokenError:
            return None
        return str(grant.viewer_id) if grant.viewer_id else None

    # -- what they may do ----------------------------------------------------------------------------
    @staticmethod
    def manages_org(caller: Caller, org_id: str) -> bool:
        """Read and change an organization's API objects: its settings, streams, series, webhooks."""
        return caller.role is Role.ADMIN or (caller.role is Role.STAFF and caller.org_id == org_id)

    @classmethod
    def may_manage(cls, caller: Caller, stream: dict[str, Any]) -> bool:
        """Read and change the stream's API object, moderate its room, see its preview."""
        return cls.manages_org(caller, stream["org_id"])

    @classmethod
    def may_watch(cls, caller: Caller, stream: dict[str, Any]) -> Decision:
        """Play its media and recordings, open its page, join its room, follow its events."""
        visibility = stream.get("visibility") or "PUBLIC"
        if visibility == "PUBLIC" or cls.may_manage(caller, stream):
            return ALLOW
        if caller.role is Role.VIEWER:
            return ALLOW  # stream_caller only makes a VIEWER from a token signed for this stream
        if caller.role is Role.MEMBER and visibility == "MEMBERS_ONLY" and caller.org_id == stream["org_id"]:
            return ALLOW
        if caller.role is Role.ANONYMOUS and caller.problem is None:
            return Decision(False, 401, "this stream needs a playback token")
        return Decision(False, 403, caller.problem or "this token does not reach this stream")

    @staticmethod
    def listed(stream: dict[str, Any]) -> bool:
        """Shown on the public home page and in public lists: public streams only."""
        return (stream.get("visibility") or "PUBLIC") == "PUBLIC"

    @classmethod
    def may_see_preview(cls, caller: Caller, stream: dict[str, Any]) -> bool:
        """A broadcast held as a preview (auto_publish off) is for the church's staff until go-live."""
        return cls.may_manage(caller, stream)
