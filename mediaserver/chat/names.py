"""Display names in the live room, sans-IO: cleaning what a guest typed, refusing names that pose as staff
or copy a member's or moderator's name (look-alike letters, invisible characters, leet, bidi tricks),
and the "Guest NNNN" name a refused guest gets instead (the same for the same viewer every time).
"""
from __future__ import annotations

import hashlib
from typing import Collection

from mediaserver.chat.text import fold, has_bidi_controls, leet_words, strip_invisible

MAX_NAME = 40
# Words no guest name may contain, however spelled ("Pаstor", "Ｐａｓｔｏｒ", "Moder4tor", "P a s t o r").
RESERVED_WORDS = ("mod", "moderator", "admin", "administrator", "pastor", "host", "staff", "system")
_RESERVED_KEYS = frozenset(w for word in RESERVED_WORDS for w in leet_words(word))


def clean_name(name: str, limit: int = MAX_NAME) -> str:
    """What is shown: invisible and bidi characters removed, runs of spaces collapsed, cut to `limit`."""
    return " ".join(strip_invisible(name).split())[:limit].strip()


def name_key(name: str) -> str:
    """The key names are compared on: 'Ruth Smith', 'ruth  smith' and 'Ruth Smіth' (Cyrillic і) share it."""
    return " ".join(fold(name).split())


def poses_as_staff(name: str) -> bool:
    """A reserved word in the name, once look-alikes, leet, camelCase and separators are folded; or
    explicit bidi controls, which exist to make a name show as something other than its letters."""
    if has_bidi_controls(name):
        return True
    return any(word in _RESERVED_KEYS for word in leet_words(name))


def guest_name(identity: str) -> str:
    """'Guest NNNN', fixed for one viewer identity (not for an address: a whole church shares one)."""
    digest = hashlib.sha256(identity.encode()).digest()
    return f"Guest {int.from_bytes(digest[:4], 'big') % 10000:04d}"


def choose_guest_name(requested: str, identity: str, protected: Collection[str] = ()) -> str:
    """The name a guest speaks under: what they asked for, cleaned; or 'Guest NNNN' when it is empty,
    poses as staff, or looks like one of the names whose keys are `protected` (members and staff)."""
    name = clean_name(requested)
    if not name or poses_as_staff(requested):
        return guest_name(identity)
    key = name_key(name)
    if not key or key in protected:
        return guest_name(identity)
    return name
