"""Valid push bodies: the seed's example body and variations of it."""

from __future__ import annotations

from typing import Any

SEED_TOKEN = "YOUR-API-TOKEN"  # noqa: S105 (the seed's placeholder, not a secret)

# The body of the seed's raw request, attribute for attribute.
SEED_BODY: dict[str, str] = {
    "apiToken": SEED_TOKEN,
    "Amount": "14.50",
    "CurrencyID": "CAD",
    "LicencePlate": "PL8RDR",
    "zone": "Lot 4",
    "permitNo": "L4-1138",
    "startTime": "2018-07-02T09:00:00",
    "endTime": "2018-07-02T09:30:00",
}


def make_payload(**overrides: Any) -> dict[str, Any]:
    """The seed body with ``overrides``; an override of None removes the attribute."""
    body: dict[str, Any] = {**SEED_BODY, **overrides}
    return {name: value for name, value in body.items() if value is not None}
