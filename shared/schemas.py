"""The push body's wire contract (marshmallow) and the job payload the workers receive.

Validation happens here, once, in the receiver; the workers trust the job payload.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, ClassVar, Self, TypedDict
from zoneinfo import ZoneInfo

from marshmallow import EXCLUDE, Schema, ValidationError, fields, missing, validates_schema

from shared.codes import (
    END_TIME_INVALID,
    END_TIME_REQUIRED,
    INVALID,
    NOT_PARSEABLE,
    PLATE_REQUIRED,
    REQUIRED,
    START_TIME_INVALID,
    TOKEN_MISSING,
    TOO_LONG,
)
from shared.constants import CURRENCIES, PLATE_COLUMN, ZONE_COLUMN
from shared.local_time import local_time_problem
from shared.normalize import normalize_plate, normalize_zone

# Every name a client may use for an attribute, canonical name first (the seed's
# "Possible Names" column). Names match exactly as written.
ALIASES: dict[str, tuple[str, ...]] = {
    "apiToken": ("apiToken",),
    "Amount": ("Amount", "amount"),
    "CurrencyID": ("CurrencyID", "currency"),
    "startTime": ("startTime", "StartDateUtc"),
    "endTime": ("endTime", "EndDateUtc"),
    "LicencePlate": ("LicencePlate", "plate"),
    "permitNo": ("permitNo", "TicketNumber"),
    "zone": ("zone", "ParkingZoneName"),
}

_TOKEN = re.compile(r"[A-Za-z0-9-]{1,50}")
_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}")
_AMOUNT = re.compile(r"\d{1,6}\.\d{2}")
# What PostgreSQL text refuses besides NUL: lone surrogates (not encodable as UTF-8).
_SURROGATE = re.compile("[\ud800-\udfff]")
# A time zone or offset applied to year 1 or 9999 can leave datetime's range (OverflowError
# deep in an enqueue, failing a whole micro-batch): such times are refused up front.
MIN_YEAR, MAX_YEAR = 2, 9998
# A permit's start and end times lie in these years: a meter whose clock reset to 1970 or
# a typo's year 2208 is refused (9007/9005), not stored as a permit no one will ever see.
PERMIT_MIN_YEAR, PERMIT_MAX_YEAR = 2000, 2099
PERMIT_TIME_RANGE = f"{PERMIT_MIN_YEAR}-01-01T00:00:00 to {PERMIT_MAX_YEAR}-12-31T23:59:59"


def sent_token(body: Any) -> str | None:
    """The ``apiToken`` of a body, read without validating the rest; None unless well formed.

    The batch push checks tokens with it before any validation (ingest/push.py).
    """
    token = body.get("apiToken") if isinstance(body, Mapping) else None
    if isinstance(token, str) and _TOKEN.fullmatch(token.strip()):
        return token.strip()
    return None


def in_supported_range(moment: datetime) -> bool:
    return MIN_YEAR <= moment.year <= MAX_YEAR


class Problem(str):
    """An error message that also carries the OPS-COM code it maps to."""

    code: int

    def __new__(cls, message: str, code: int) -> Self:
        problem = super().__new__(cls, message)
        problem.code = code
        return problem


class InvalidPermitError(Exception):
    """The body broke the attribute table; ``errors`` is keyed by the names as sent."""

    def __init__(self, errors: dict[str, list[Problem]]) -> None:
        super().__init__(errors)
        self.errors = errors

    @property
    def code(self) -> int:
        return min(problem.code for problems in self.errors.values() for problem in problems)


class AttributeField(fields.Field):  # type: ignore[type-arg]
    """A string attribute of the push body whose errors carry OPS-COM codes.

    Surrounding white space is trimmed; an empty optional attribute counts as absent.
    """

    invalid_message: ClassVar[str] = "Is not valid."

    def __init__(
        self,
        *,
        required_code: int = REQUIRED,
        invalid_code: int = INVALID,
        max_length: int | None = None,
        **kwargs: Any,
    ) -> None:
        messages: dict[str, str | list[Any] | dict[Any, Any]] = {
            "required": "Is required.",
            "null": "Is required.",
            "not_string": "Must be a string.",
            "invalid": self.invalid_message,
            "too_long": "Must be at most {max} characters.",
            "unstorable": "Must not contain NUL or unpaired surrogate characters.",
            "normal_too_long": "Must be at most {max} characters once normalised.",
            "out_of_range": f"Must be a time from {PERMIT_TIME_RANGE}.",
        }
        # deserialize() below leaves out marshmallow's steps for these: refuse them.
        if {"validate", "load_default", "pre_load", "post_load"} & kwargs.keys():
            raise TypeError(f"{type(self).__name__} takes no validators, default or hooks")
        super().__init__(
            allow_none=not kwargs.get("required", False), error_messages=messages, **kwargs
        )
        self.required_code = required_code
        self.invalid_code = invalid_code
        self.max_length = max_length

    def make_error(self, key: str, **kwargs: Any) -> ValidationError:
        code = {
            "required": self.required_code,
            "null": self.required_code,
            "too_long": TOO_LONG,
            "normal_too_long": TOO_LONG,
            "unstorable": INVALID,
        }.get(key, self.invalid_code)
        kwargs.setdefault("max", self.max_length)
        message = str(self.error_messages[key]).format(**kwargs)
        return ValidationError(Problem(message, code))

    def deserialize(
        self, value: Any, attr: str | None = None, data: Any = None, **kwargs: Any
    ) -> Any:
        """marshmallow's ``Field.deserialize`` in one call: an attribute has no default,
        no field pre- or post-load functions and no validators, so their steps are left
        out. A missing optional attribute stays missing; null or blank is absent (None)."""
        if value is missing or value is None:
            if self.required:
                raise self.make_error("required" if value is missing else "null")
            return value
        if not isinstance(value, str):
            raise self.make_error("not_string")
        # `in` first: NUL is the common check and a substring test is cheaper than a regex.
        if "\x00" in value or (not value.isascii() and _SURROGATE.search(value)):
            raise self.make_error("unstorable")
        text = value.strip()
        if not text:
            if self.required:
                raise self.make_error("required")
            return None
        if self.max_length is not None and len(text) > self.max_length:
            raise self.make_error("too_long")
        return self.parse(text)

    def parse(self, text: str) -> Any:
        return text


class TokenField(AttributeField):
    invalid_message = "Must be 1 to 50 letters, digits or dashes."

    def parse(self, text: str) -> str:
        if not _TOKEN.fullmatch(text):
            raise self.make_error("invalid")
        return text


class TimestampField(AttributeField):
    """``YYYY-MM-DDTHH:MM:SS``, zero-padded, in ASCII digits.

    The pattern fixes the shape; ``fromisoformat`` (C, 40x faster than ``strptime`` here)
    then refuses what is no date, such as February 30 or hour 24.
    """

    invalid_message = (
        "Must be a real time written YYYY-MM-DDTHH:MM:SS, such as 2018-07-02T09:00:00."
    )

    def parse(self, text: str) -> tuple[str, datetime]:
        if not _TIME.fullmatch(text):
            raise self.make_error("invalid")
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise self.make_error("invalid") from None
        if not PERMIT_MIN_YEAR <= moment.year <= PERMIT_MAX_YEAR:
            raise self.make_error("out_of_range")
        return text, moment


class AmountField(AttributeField):
    invalid_message = 'Must be a decimal string from 0.01 to 999999.99 with two decimals: "14.50".'

    def parse(self, text: str) -> str:
        """The amount's normal form, as ``str(Decimal(text))`` writes it: "0014.50" -> "14.50"."""
        if not _AMOUNT.fullmatch(text):
            raise self.make_error("invalid")
        whole, cents = text.split(".")
        amount = f"{int(whole)}.{int(cents):02d}"  # \d also matches non-ASCII digits
        if amount == "0.00":
            raise self.make_error("invalid")
        return amount


class CurrencyField(AttributeField):
    invalid_message = "Must be CAD or USD."

    def parse(self, text: str) -> str:
        currency = text.upper()
        if currency not in CURRENCIES:
            raise self.make_error("invalid")
        return currency


class PlateField(AttributeField):
    invalid_message = "Must contain at least one letter or digit."

    def parse(self, text: str) -> tuple[str, str]:
        """(the plate as sent, its normal form)."""
        if not any(char.isalnum() for char in text):
            raise self.make_error("invalid")
        normalized = normalize_plate(text)
        if len(normalized) > PLATE_COLUMN:  # NFKC and upper-casing can lengthen it
            raise self.make_error("normal_too_long", max=PLATE_COLUMN)
        return text, normalized


class ZoneField(AttributeField):
    """A zone name whose normal form (case-folded: "ß" -> "ss") still fits its column."""

    def parse(self, text: str) -> tuple[str, str]:
        """(the name as sent, its normal form)."""
        normalized = normalize_zone(text)
        if len(normalized) > ZONE_COLUMN:
            raise self.make_error("normal_too_long", max=ZONE_COLUMN)
        return text, normalized


@dataclass(frozen=True, slots=True)
class PermitIn:
    """A valid push body. Times are naive: the deployment's time zone applies."""

    api_token: str
    plate: str
    plate_normalized: str  # computed once here; de-dup and the job payload both use it
    start_raw: str
    start: datetime
    end_raw: str
    end: datetime
    amount: str | None = None
    currency: str | None = None
    permit_no: str | None = None
    zone: str | None = None
    zone_normalized: str | None = None


class PermitSchema(Schema):
    """The push body, by canonical attribute names (aliases are resolved before)."""

    class Meta:
        unknown = EXCLUDE  # meter firmware adds fields of its own

    apiToken = TokenField(required=True, required_code=TOKEN_MISSING, max_length=50)
    Amount = AmountField(max_length=9)
    CurrencyID = CurrencyField(max_length=10)
    startTime = TimestampField(required=True, invalid_code=START_TIME_INVALID, max_length=20)
    endTime = TimestampField(
        required=True,
        required_code=END_TIME_REQUIRED,
        invalid_code=END_TIME_INVALID,
        max_length=20,
    )
    LicencePlate = PlateField(required=True, required_code=PLATE_REQUIRED, max_length=25)
    permitNo = AttributeField(max_length=50)
    zone = ZoneField(max_length=ZONE_COLUMN)

    @validates_schema
    def _end_after_start(self, data: dict[str, Any], **kwargs: Any) -> None:
        if data["endTime"][1] <= data["startTime"][1]:
            raise ValidationError(
                Problem("Must be after the start time.", END_TIME_INVALID), "endTime"
            )


_SCHEMA = PermitSchema()


def load_permit(
    body: Any, *, timezone: ZoneInfo | None = None, max_duration: timedelta | None = None
) -> PermitIn:
    """Validate a decoded push body; raise InvalidPermitError keyed by the names as sent.

    ``timezone``: the deployment's (DEFAULT_TIMEZONE), in which a local time must name one
    instant (``local_time_problem``). ``max_duration``: the longest permit (MAX_PERMIT_DAYS).
    """
    data = load_with_aliases(_SCHEMA, ALIASES, body)
    (start_raw, start), (end_raw, end) = data["startTime"], data["endTime"]
    plate, plate_normalized = data["LicencePlate"]
    zone, zone_normalized = data.get("zone") or (None, None)
    permit = PermitIn(
        api_token=data["apiToken"],
        plate=plate,
        plate_normalized=plate_normalized,
        start_raw=start_raw,
        start=start,
        end_raw=end_raw,
        end=end,
        amount=data.get("Amount"),
        currency=data.get("CurrencyID"),
        permit_no=data.get("permitNo"),
        zone=zone,
        zone_normalized=zone_normalized,
    )
    errors: dict[str, list[Problem]] = {}
    if timezone is not None:
        for name, moment, code in (
            ("startTime", permit.start, START_TIME_INVALID),
            ("endTime", permit.end, END_TIME_INVALID),
        ):
            if (problem := local_time_problem(moment, timezone)) is not None:
                errors[sent_name(body, name)] = [Problem(problem, code)]
    if max_duration is not None and permit.end - permit.start > max_duration:
        days = max_duration // timedelta(days=1)
        message = f"Must be at most {days} days after the start time."
        errors.setdefault(sent_name(body, "endTime"), []).append(Problem(message, END_TIME_INVALID))
    if errors:
        raise InvalidPermitError(errors)
    return permit


def sent_name(body: Mapping[str, Any], name: str) -> str:
    """The name under which ``body`` carries attribute ``name`` (the first alias present)."""
    return next((alias for alias in ALIASES[name] if alias in body), name)


def load_with_aliases(schema: Schema, aliases: Mapping[str, tuple[str, ...]], body: Any) -> Any:
    """Load ``body`` with ``schema`` after resolving ``aliases``.

    Raises InvalidPermitError keyed by the names the client sent.
    """
    if not isinstance(body, Mapping):
        raise InvalidPermitError({"body": [Problem("Must be a JSON object.", NOT_PARSEABLE)]})
    canonical, sent_as, errors = _resolve_aliases(body, aliases)
    try:
        loaded = schema.load(canonical)
    except ValidationError as exc:
        assert isinstance(exc.messages, dict)  # noqa: S101 - a Schema's errors are by field
        for name, problems in exc.messages.items():
            errors.setdefault(sent_as.get(name, name), []).extend(problems)
    if errors:
        raise InvalidPermitError(errors)
    return loaded


def _resolve_aliases(
    body: Mapping[str, Any], aliases: Mapping[str, tuple[str, ...]]
) -> tuple[dict[str, Any], dict[str, str], dict[str, list[Problem]]]:
    """Map each attribute to its canonical name, remembering the name the client used."""
    canonical: dict[str, Any] = {}
    sent_as: dict[str, str] = {}
    errors: dict[str, list[Problem]] = {}
    for name, names in aliases.items():
        for alias in names:  # no list of the names present: nearly every body sends one
            if alias not in body:
                continue
            if name not in canonical:
                canonical[name] = body[alias]
                sent_as[name] = alias
            elif not _same(body[alias], canonical[name]):
                present = [other for other in names if other in body]
                message = f"Sent as {' and '.join(present)} with different values."
                errors[sent_as[name]] = [Problem(message, INVALID)]
                break
    return canonical, sent_as, errors


def _same(one: Any, other: Any) -> bool:
    """Whether two names of one attribute carry the same value, without recursing.

    Only strings (and JSON's other scalars) compare by value: two arrays or objects never
    count as the same, so nested values are not walked (1000-deep arrays would raise
    RecursionError). Such a value is refused by the field anyway: it is not a string.
    """
    if type(one) is not type(other):
        return False
    if isinstance(one, str | int | float | bool) or one is None:
        return bool(one == other)
    return False


class PermitJob(TypedDict):
    """One permit as a job argument: JSON primitives only (RQ's JSON serializer)."""

    reference_id: str
    client_id: int
    permit_type: str
    plate: str
    plate_normalized: str
    zone: str | None
    zone_normalized: str | None
    permit_no: str | None
    amount: str | None  # a decimal string: JSON floats would round it
    currency: str | None
    start_raw: str
    end_raw: str
    starts_at: str  # ISO 8601 with offset
    ends_at: str
    received_at: str
