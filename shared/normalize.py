"""The normal forms that matching and de-duplication compare.

Both fold look-alikes first: NFKC (full-width "\uff30\uff2c\uff18" -> "PL8", ligatures, ...) and
removal of format characters (Unicode category Cf: zero-width space, soft hyphen, BOM...).
A plate then loses every dash (category Pd) and every space (Zs and other white space);
a zone keeps its words apart (any run of spaces is one space) and writes every dash as "-".
Migration 0004 rewrites the stored normal forms to these.
"""

import re
import unicodedata

_SPACES = re.compile(r"\s+")
# ASCII text is its own NFKC, has no format characters and one dash ("-"): folding it
# only writes each white-space character as " ".
_ASCII_SPACE_TO_BLANK = str.maketrans({c: " " for c in map(chr, range(128)) if c.isspace()})


def _fold(text: str) -> str:
    """NFKC without format characters (Cf); dashes (Pd) become "-", white space " "."""
    if text.isascii():  # nearly every plate and zone: 10x faster than the loop below
        return text.translate(_ASCII_SPACE_TO_BLANK)
    return _fold_unicode(text)


def _fold_unicode(text: str) -> str:
    out = []
    for char in unicodedata.normalize("NFKC", text):
        category = unicodedata.category(char)
        if category == "Cf":
            continue
        if category == "Pd":
            out.append("-")
        elif category == "Zs" or char.isspace():
            out.append(" ")
        else:
            out.append(char)
    return "".join(out)


def normalize_zone(name: str) -> str:
    """Folded, case-folded, trimmed, inner white space collapsed: " lot  4 " -> "lot 4"."""
    return _SPACES.sub(" ", _fold(name).strip()).casefold()


def normalize_plate(plate: str) -> str:
    """Folded and upper-cased with spaces and dashes removed: "pl8-rdr" -> "PL8RDR"."""
    return _fold(plate).replace(" ", "").replace("-", "").upper()
