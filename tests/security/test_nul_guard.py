"""The gateway refuses NUL and lone surrogates in any string of a JSON body (unit, no services)."""

import pytest

from gateway.http import UNSTORABLE_MESSAGE, refuse_unstorable_characters
from shared.exceptions import InvalidInput


@pytest.mark.parametrize(
    "body,details",
    [
        ({"email": "a\x00@example.com", "password": "x"}, {"email": [UNSTORABLE_MESSAGE]}),
        (
            {"items": [{"sku": "ok"}, {"sku": "n\x00"}]},
            {"items": {"1": {"sku": [UNSTORABLE_MESSAGE]}}},
        ),
        ({"name": "a\ud800b"}, {"name": [UNSTORABLE_MESSAGE]}),
        ({"password": "\udfff"}, {"password": [UNSTORABLE_MESSAGE]}),
        ({"k\x00": 1}, {"_schema": [UNSTORABLE_MESSAGE]}),
        ({"outer": {"k\ud800": 1}}, {"outer": {"_schema": [UNSTORABLE_MESSAGE]}}),
        ("\x00", {"_schema": [UNSTORABLE_MESSAGE]}),
    ],
)
def test_an_unstorable_character_is_refused_in_the_nested_details_shape(body, details):
    with pytest.raises(InvalidInput) as refused:
        refuse_unstorable_characters(body)
    assert refused.value.details == details


def test_every_bad_field_is_reported_together():
    with pytest.raises(InvalidInput) as refused:
        refuse_unstorable_characters({"name": "\ud800", "password": "a\x00", "ok": "fine"})
    assert set(refused.value.details) == {"name", "password"}


def test_a_body_without_them_passes_even_when_deep():
    deep = []
    for _ in range(5000):
        deep = [deep]
    # a surrogate *pair* is one ordinary character (U+1F600), not a lone surrogate
    refuse_unstorable_characters(
        {"items": deep, "name": "\u202eok \U0001f600", "n": None, "x": 1.5}
    )
