"""The normal forms that matching and de-duplication compare."""

import re

_SPACES = re.compile(r"\s+")
_PLATE_NOISE = re.compile(r"[\s-]+")


def normalize_zone(name: str) -> str:
    """Case-fold, trim and collapse inner white space: " lot  4 " -> "lot 4"."""
    return _SPACES.sub(" ", name.strip()).casefold()


def normalize_plate(plate: str) -> str:
    """Upper-case with spaces and dashes removed: "pl8-rdr" -> "PL8RDR"."""
    return _PLATE_NOISE.sub("", plate).upper()
