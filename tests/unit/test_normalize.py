"""The normal forms: the ASCII fast path folds exactly as the full Unicode fold does."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from shared.normalize import _fold, _fold_unicode, normalize_plate, normalize_zone

ASCII = st.text(st.characters(max_codepoint=127), max_size=60)


@given(ASCII)
def test_ascii_text_folds_as_the_unicode_fold_does(text: str) -> None:
    assert text.isascii()
    assert _fold(text) == _fold_unicode(text)


def test_every_ascii_character_folds_as_the_unicode_fold_does() -> None:
    for code in range(128):
        assert _fold(chr(code)) == _fold_unicode(chr(code)), code


def test_ascii_plates_and_zones_keep_their_normal_forms() -> None:
    assert normalize_plate(" pl8-rdr\t") == "PL8RDR"
    assert normalize_zone("  Lot\t\x1f 4 ") == "lot 4"
    assert normalize_plate("PL8\u200bRDR") == "PL8RDR"  # not ASCII: the Unicode fold
