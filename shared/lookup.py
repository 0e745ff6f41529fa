"""The enforcement lookup's query: is this plate paid (in this zone, at this time)?"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from marshmallow import EXCLUDE, Schema, ValidationError, post_load

from shared.codes import PLATE_REQUIRED
from shared.constants import ZONE_COLUMN
from shared.schemas import (
    AttributeField,
    InvalidPermitError,
    PlateField,
    ZoneField,
    in_supported_range,
)

_AT = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:\d{2})?")


class _At(AttributeField):
    """A moment: ``YYYY-MM-DDTHH:MM:SS`` (the deployment's time zone) or with an offset."""

    invalid_message = "Must be a time written YYYY-MM-DDTHH:MM:SS, optionally with an offset."

    def parse(self, text: str) -> datetime:
        if not _AT.fullmatch(text):
            raise self.make_error("invalid")
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise self.make_error("invalid") from None
        if not in_supported_range(moment):
            raise self.make_error("invalid")
        return moment


@dataclass(frozen=True, slots=True)
class LookupQuery:
    """An enforcement lookup; ``at`` is naive when sent without an offset."""

    plate_normalized: str
    zone: str | None
    at: datetime | None


class LookupSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    plate = PlateField(required=True, required_code=PLATE_REQUIRED, max_length=25)
    zone = ZoneField(max_length=ZONE_COLUMN)
    at = _At(max_length=32)

    @post_load
    def _make(self, data: dict[str, Any], **kwargs: Any) -> LookupQuery:
        _, plate_normalized = data["plate"]
        zone, _ = data.get("zone") or (None, None)
        return LookupQuery(plate_normalized, zone, data.get("at"))


_LOOKUP = LookupSchema()


def load_lookup(query: Mapping[str, str]) -> LookupQuery:
    """Validate the lookup's query parameters; errors keyed by parameter name."""
    try:
        lookup: LookupQuery = _LOOKUP.load(dict(query))
    except ValidationError as exc:
        assert isinstance(exc.messages, dict)  # noqa: S101 - a Schema's errors are by field
        raise InvalidPermitError(exc.messages) from None
    return lookup
