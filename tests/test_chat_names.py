"""Display names, look-alike folding and sanctions, sans-IO (mediaserver/chat/names.py, text.py,
sanctions.py)."""
from __future__ import annotations

import pytest

from mediaserver.chat.names import choose_guest_name, clean_name, guest_name, name_key, poses_as_staff
from mediaserver.chat.sanctions import Authors, Sanction, Sanctions
from mediaserver.chat.text import fold, skeleton, strip_invisible, within_one_edit

STAFF_LOOKALIKES = [
    "Pastor", "Moderator", "Admin", "Pastor Jim", "PastorJim",
    "P\u0430stor",                 # Cyrillic а
    "\u0410dmin",                  # Cyrillic А
    "\uff30\uff41\uff53\uff54\uff4f\uff52",  # fullwidth Ｐａｓｔｏｒ
    "Pas\u200btor",                # zero-width space
    "Pas\u00adtor",                # soft hyphen
    "\u202erotsaP",                # right-to-left override: shows as "Pastor"
    "Moder4tor", "Adm1n", "ADMlN", "M0D", "Sys7em", "5taff",
    "rnoderator",                  # r + n looks like m (UTS #39)
    "P a s t o r", "P.a.s.t.o.r", "pastor_jim",
]


@pytest.mark.parametrize("name", STAFF_LOOKALIKES)
def test_names_posing_as_staff_become_guest_nnnn(name: str) -> None:
    assert poses_as_staff(name)
    assert choose_guest_name(name, "guest:abc") == guest_name("guest:abc")


@pytest.mark.parametrize("name", ["Dave", "Hosanna", "Modesto", "Ghost Rider", "Staffan", "Élodie", "Mohammed",
                                  "Ruth", "Grace & Tom", "李雷", "Zoë", "Hostetler"])
def test_ordinary_names_pass(name: str) -> None:
    assert not poses_as_staff(name)
    assert choose_guest_name(name, "guest:abc") == name


def test_a_copy_of_a_members_name_with_one_cyrillic_letter_is_refused() -> None:
    protected = {name_key("Ruth Smith"), name_key("Pastor Jim")}
    for copy in ("Ruth Smith", "ruth  smith", "Ruth Sm\u0456th", "Ruth Smit\u04bb", "Ruth\u200b Smith"):
        assert choose_guest_name(copy, "guest:1", protected).startswith("Guest "), copy
    assert choose_guest_name("Ruth Smithson", "guest:1", protected) == "Ruth Smithson"


def test_guest_numbers_follow_the_identity_not_the_address() -> None:
    assert guest_name("guest:a") == guest_name("guest:a")
    assert len({guest_name(f"guest:{n}") for n in range(50)}) > 40
    assert guest_name("guest:a").startswith("Guest ") and len(guest_name("guest:a")) == 10


def test_clean_name_strips_invisible_and_bidi_characters() -> None:
    assert clean_name("  Jo\u200b  \u202eAnn\u202c  ") == "Jo Ann"
    assert clean_name("x" * 100) == "x" * 40
    assert clean_name("\u200b\u200c\u2060") == ""
    assert choose_guest_name("\u200b\u200c", "guest:z") == guest_name("guest:z")


def test_skeletons_and_folding() -> None:
    assert skeleton("P\u0430stor") == skeleton("Pastor")
    assert fold("HÉRÉTIC") == fold("heretic") == fold("h\u0435r\u0435tic")
    assert strip_invisible("a\u00ad\u200b\u2060\ufeffb") == "ab"
    assert within_one_edit("dave", "davee") and within_one_edit("dave", "dove") and within_one_edit("dave", "ave")
    assert not within_one_edit("dave", "dan") and not within_one_edit("dave", "david")


def _ban(name: str, identity: str, address: str, **kw: object) -> Sanction:
    return Sanction(kind="ban", name=name, identities=[identity], addresses=[address], **kw)  # type: ignore[arg-type]


def test_a_ban_follows_the_identity_not_the_network() -> None:
    bans = Sanctions([_ban("Dave", "guest:dave", "10.0.0.1")])
    # Another guest on the same church Wi-Fi speaks on.
    assert bans.muting(identity="guest:ann", name="Ann", address="10.0.0.1", guest=True, now=0) is None
    assert bans.muting(identity="guest:dave", name="Renamed", address="10.9.9.9", guest=True, now=0)
    # The same name again, or one letter away on Dave's network, is Dave.
    assert bans.muting(identity="guest:new", name="Dave", address="10.9.9.9", guest=True, now=0)
    assert bans.muting(identity="guest:new", name="Davee", address="10.0.0.1", guest=True, now=0)
    assert bans.muting(identity="guest:new", name="D\u0430ve", address="10.0.0.1", guest=True, now=0)
    assert bans.muting(identity="guest:new", name="Davee", address="10.9.9.9", guest=True, now=0) is None
    # Members and staff are never caught by a guest's name or network.
    assert bans.muting(identity="member:o:Dave", name="Dave", address="10.0.0.1", guest=False, now=0) is None


def test_address_bans_mute_guests_only_and_time_outs_expire() -> None:
    bans = Sanctions([_ban("Dave", "guest:dave", "10.0.0.1", address_ban=True)])
    assert bans.muting(identity="guest:ann", name="Ann", address="10.0.0.1", guest=True, now=0)
    assert bans.muting(identity="member:o:Ruth", name="Ruth", address="10.0.0.1", guest=False, now=0) is None
    timeouts = Sanctions([Sanction(kind="timeout", name="Eve", identities=["guest:eve"], addresses=[], until=100.0)])
    assert timeouts.muting(identity="guest:eve", name="Eve", address="x", guest=True, now=50)
    assert timeouts.muting(identity="guest:eve", name="Eve", address="x", guest=True, now=150) is None
    assert not timeouts.items


def test_generated_guest_names_match_by_identity_only() -> None:
    bans = Sanctions([_ban("Guest 1234", "guest:a", "10.0.0.1")])
    assert bans.muting(identity="guest:b", name="Guest 1235", address="10.0.0.1", guest=True, now=0) is None
    assert bans.muting(identity="guest:b", name="Guest 1234", address="10.0.0.1", guest=True, now=0) is None


def test_sanctions_round_trip_through_a_row_and_lift_by_name() -> None:
    ban = _ban("Dave", "guest:dave", "10.0.0.1", address_ban=True)
    again = Sanction.from_row(ban.row("s1"))
    assert (again.identities, again.addresses, again.address_ban, again.name_key) == (
        ["guest:dave"], ["10.0.0.1"], True, "dave")
    bans = Sanctions([again])
    assert [s.id for s in bans.lift("DAVE")] == [ban.id] and not bans.items


def test_authors_remember_who_used_a_name_within_a_bound() -> None:
    authors = Authors(limit=3)
    authors.heard("Dave", "guest:d1", "10.0.0.1", "guest")
    authors.heard("Dave", "guest:d2", "10.0.0.2", "guest")
    authors.heard("Ruth Smith", "member:o:Ruth Smith", "10.0.0.3", "member")
    assert authors.named("dave") == {"guest:d1": {"10.0.0.1"}, "guest:d2": {"10.0.0.2"}}
    assert name_key("Ruth Smith") in authors.protected_keys
    for n in range(3):
        authors.heard(f"Other {n}", f"guest:o{n}", None, "guest")
    assert authors.named("Dave") == {} and not authors.protected_keys
