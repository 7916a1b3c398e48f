"""The gateway refuses U+0000 in any string of a JSON body (unit, no services)."""

import pytest

from gateway.http import refuse_nul_characters
from shared.exceptions import InvalidInput


@pytest.mark.parametrize(
    "body,where",
    [
        ({"email": "a\x00@example.com", "password": "x"}, "email"),
        ({"items": [{"sku": "ok"}, {"sku": "n\x00"}]}, "items.1.sku"),
        ({"k\x00": 1}, "body"),
        ("\x00", "body"),
    ],
)
def test_a_nul_is_refused_naming_where_it_is(body, where):
    with pytest.raises(InvalidInput) as refused:
        refuse_nul_characters(body)
    assert where in refused.value.details


def test_a_body_without_nul_passes_even_when_deep():
    deep = []
    for _ in range(5000):
        deep = [deep]
    refuse_nul_characters({"items": deep, "name": "\u202eok", "n": None, "x": 1.5})
