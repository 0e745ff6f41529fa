"""The push schema's normal forms and alias rules, as properties over generated input.

The contract tests (test_push_contract.py) pin each error row by example; these pin what
the lean schema computes by hand against its definition.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from marshmallow import ValidationError

from shared.codes import INVALID
from shared.operations import UPDATE_ALIASES
from shared.schemas import ALIASES, AmountField, _resolve_aliases, load_permit
from tests.factories import make_payload


@given(st.from_regex(r"\d{1,6}\.\d{2}", fullmatch=True))  # \d: any Unicode digit, as the field's
def test_an_amount_is_refused_below_a_cent_or_written_as_decimal_writes_it(text: str) -> None:
    field = AmountField(max_length=9)
    try:
        written: str | None = field.parse(text)
    except ValidationError:
        written = None
    assert written == (str(Decimal(text)) if Decimal(text) >= Decimal("0.01") else None)


# The push's names (two at most an attribute) and an update's (three for its reference id).
ALIAS_TABLES = [ALIASES, UPDATE_ALIASES]
ALL_NAMES = sorted({alias for table in ALIAS_TABLES for names in table.values() for alias in names})


@given(
    st.sampled_from(ALIAS_TABLES),
    st.dictionaries(st.sampled_from(ALL_NAMES), st.sampled_from(["a", "b", 1, None, ["a"]])),
)
def test_each_attribute_takes_its_first_name_sent_and_differing_names_are_an_error(
    aliases: dict[str, tuple[str, ...]], body: dict[str, Any]
) -> None:
    canonical, sent_as, errors = _resolve_aliases(body, aliases)
    expected_errors = {}
    for name, names in aliases.items():
        present = [alias for alias in names if alias in body]
        if not present:
            assert name not in canonical and name not in sent_as
            continue
        first = body[present[0]]
        assert (canonical[name], sent_as[name]) == (first, present[0])
        others = [body[alias] for alias in present[1:]]
        # Only equal scalars count as the same value: two lists never do.
        if any(
            type(other) is not type(first) or other != first or isinstance(first, list)
            for other in others
        ):
            expected_errors[present[0]] = f"Sent as {' and '.join(present)} with different values."
    assert {key: [str(p) for p in problems] for key, problems in errors.items()} == {
        key: [message] for key, message in expected_errors.items()
    }
    assert all(problem.code == INVALID for problems in errors.values() for problem in problems)


@pytest.mark.parametrize("amount", ["0014.50", "14.50", "000000.01"])
def test_a_loaded_permit_carries_the_normal_forms(amount: str) -> None:
    body = make_payload(Amount=amount, CurrencyID=" cad ", zone=" Lot  4 ", LicencePlate="pl8-rdr")
    permit = load_permit(body)
    assert permit.amount == str(Decimal(amount))
    assert (permit.currency, permit.zone, permit.zone_normalized) == ("CAD", "Lot  4", "lot 4")
    assert (permit.plate, permit.plate_normalized) == ("pl8-rdr", "PL8RDR")
    assert (permit.start_raw, permit.end_raw) == (body["startTime"], body["endTime"])
