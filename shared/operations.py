"""Update and delete bodies (OPS-COM's permit update and delete) and their job payload.

The attributes reuse the push body's field rules and OPS-COM codes; only the reference id
is new: missing is 9008 (400); an id this service never issued is 9009 (404).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, TypedDict

from marshmallow import EXCLUDE, Schema, ValidationError, post_load, validates_schema

from shared.codes import (
    END_TIME_INVALID,
    REFERENCE_REQUIRED,
    REQUIRED,
    TOKEN_MISSING,
)
from shared.normalize import normalize_plate
from shared.schemas import (
    AmountField,
    AttributeField,
    CurrencyField,
    PlateField,
    Problem,
    TimestampField,
    TokenField,
    load_with_aliases,
)

OperationKind = Literal["update", "delete"]

# Names accepted per attribute, canonical first. The contract names `plate`, `currency`
# and `endTime` for an update; the push's names for the same attributes work too.
REFERENCE_NAMES = ("referenceID", "referenceid", "reference_id")
DELETE_ALIASES: dict[str, tuple[str, ...]] = {
    "apiToken": ("apiToken",),
    "referenceID": REFERENCE_NAMES,
}
UPDATE_ALIASES: dict[str, tuple[str, ...]] = {
    **DELETE_ALIASES,
    "plate": ("plate", "LicencePlate"),
    "Amount": ("Amount", "amount"),
    "currency": ("currency", "CurrencyID"),
    "endTime": ("endTime", "EndDateUtc"),
}
CHANGEABLE = ("plate", "Amount", "currency", "endTime")

# The ids this service hands out: str(uuid4()), lower-case and hyphenated.
_REFERENCE_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


def is_reference_id(text: str) -> bool:
    """Whether ``text`` has the shape of a reference id this service issues."""
    return _REFERENCE_ID.fullmatch(text) is not None


@dataclass(frozen=True, slots=True)
class OperationIn:
    """A valid update or delete body; an update carries at least one change."""

    kind: OperationKind
    api_token: str
    reference_id: str  # lower-cased; may still be one this service never issued
    plate: str | None = None
    amount: str | None = None
    currency: str | None = None
    end_raw: str | None = None
    end: datetime | None = None

    @property
    def plate_normalized(self) -> str | None:
        return normalize_plate(self.plate) if self.plate is not None else None


class DeleteSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    apiToken = TokenField(required=True, required_code=TOKEN_MISSING, max_length=50)
    referenceID = AttributeField(required=True, required_code=REFERENCE_REQUIRED, max_length=64)

    @post_load
    def _make(self, data: dict[str, Any], **kwargs: Any) -> OperationIn:
        return OperationIn("delete", data["apiToken"], data["referenceID"].lower())


class UpdateSchema(DeleteSchema):
    plate = PlateField(max_length=25)
    Amount = AmountField(max_length=9)
    currency = CurrencyField(max_length=10)
    endTime = TimestampField(invalid_code=END_TIME_INVALID, max_length=20)

    @validates_schema
    def _changes_something(self, data: dict[str, Any], **kwargs: Any) -> None:
        if all(data.get(name) is None for name in CHANGEABLE):
            message = "Must change at least one of plate, Amount, currency or endTime."
            raise ValidationError(Problem(message, REQUIRED), "body")

    @post_load
    def _make(self, data: dict[str, Any], **kwargs: Any) -> OperationIn:
        end_raw, end = data.get("endTime") or (None, None)
        plate, _ = data.get("plate") or (None, None)
        return OperationIn(
            "update",
            data["apiToken"],
            data["referenceID"].lower(),
            plate=plate,
            amount=data.get("Amount"),
            currency=data.get("currency"),
            end_raw=end_raw,
            end=end,
        )


_SCHEMAS: dict[OperationKind, tuple[Schema, Mapping[str, tuple[str, ...]]]] = {
    "update": (UpdateSchema(), UPDATE_ALIASES),
    "delete": (DeleteSchema(), DELETE_ALIASES),
}


def load_operation(kind: OperationKind, body: Any) -> OperationIn:
    """Validate an update or delete body; raise InvalidPermitError keyed by names as sent."""
    schema, aliases = _SCHEMAS[kind]
    operation: OperationIn = load_with_aliases(schema, aliases, body)
    return operation


class OperationChanges(TypedDict, total=False):
    """The attributes an update sets, as JSON primitives (amount stays a string)."""

    plate: str
    plate_normalized: str
    amount: str
    currency: str
    end_raw: str
    ends_at: str  # ISO 8601 with offset


class OperationJob(TypedDict):
    """One update or delete as a job argument: JSON primitives only."""

    reference_id: str
    client_id: int
    seq: int  # order of receipt across all receivers (one Redis counter)
    kind: OperationKind
    changes: OperationChanges
    received_at: str
    # False when the receiver could not tell that the create was issued: the worker
    # then answers "not found" for a missing permit instead of waiting for it.
    create_expected: bool
