"""What makes a permit unique: its client and the fingerprint of what it says.

The receiver (de-dup of resends), the worker (the unique key it inserts on) and migration
0005 (the fingerprints of rows stored before it) compute it here, one way. The plate and the
zone enter in their normal forms (shared/normalize.py), so look-alike spellings are one permit.
"""

from __future__ import annotations

import hashlib


def permit_fingerprint(
    client_id: int,
    plate_normalized: str,
    start_raw: str,
    end_raw: str,
    amount: str | None,
    currency: str | None,
    permit_no: str | None,
    zone_normalized: str | None,
) -> str:
    """SHA-256 (hex, 64 characters) of the permit's identifying attributes."""
    canonical = "\x1f".join(
        str(part)
        for part in (
            client_id,
            plate_normalized,
            start_raw,
            end_raw,
            amount,
            currency,
            permit_no,
            zone_normalized,
        )
    )
    return hashlib.sha256(canonical.encode()).hexdigest()
