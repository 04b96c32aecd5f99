"""Amounts people type (domain.formats.parse_yuan, parse_signed_yuan): a comma, ASCII or
full-width, is a thousands separator only where it groups three digits (CONTRACT §5). Properties:
what the parser accepts is what a Chinese reader reads, and every way the product writes money
reads back to the same fen."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.formats import AmountError, parse_signed_yuan, parse_yuan, yuan

MAX_FEN = 10**12 - 1  # ten digits of whole yuan, the parser's limit


def reading(whole: str, decimals: str) -> int | None:
    """What a reader takes `whole.decimals` for, in fen: commas only at the thousands of the
    number as Python writes it with `,`; None when the commas sit anywhere else."""
    digits = whole.replace(",", "")
    if not digits or len(decimals) > 2 or len(digits) > 10:
        return None
    if "," in whole and whole != f"{int(digits):,}":
        return None
    return int(Decimal(f"{digits}.{decimals or '0'}") * 100)


groups = st.lists(st.text("0123456789", min_size=0, max_size=4), min_size=1, max_size=4)


@settings(max_examples=400, deadline=None)
@given(groups, st.sampled_from([",", "，"]), st.text("0123456789", max_size=3), st.sampled_from(["", "¥", "￥"]),
       st.sampled_from(["", "元"]))
def test_a_comma_groups_three_digits_or_the_amount_is_refused(parts: list[str], comma: str, decimals: str,
                                                              prefix: str, suffix: str) -> None:
    whole = comma.join(parts)
    text = prefix + whole + (f".{decimals}" if decimals else "") + suffix
    expected = reading(whole.replace("，", ","), decimals)
    try:
        got: int | None = parse_yuan(text)
    except AmountError:
        got = None
    assert got == (expected if expected else None), text


@settings(max_examples=300, deadline=None)
@given(st.integers(1, MAX_FEN), st.sampled_from(["¥", ""]), st.sampled_from([",", "，"]))
def test_money_as_written_reads_back(fen: int, sign: str, comma: str) -> None:
    x = Decimal(fen) / 100
    text = f"{sign}{x:,.2f}".replace(",", comma)
    assert parse_yuan(text) == fen
    assert parse_yuan(yuan(fen)) == fen
    assert parse_signed_yuan("-" + text) == -fen


@pytest.mark.parametrize("text,fen", [("1,234.50", 123450), ("12,345", 1234500), ("1,234,567.89", 123456789),
                                      ("1，234.5", 123450), ("¥1,000元", 100000), ("1234.50", 123450)])
def test_thousands_separators(text: str, fen: int) -> None:
    assert parse_yuan(text) == fen


@pytest.mark.parametrize("text", ["12,5", "12，50", "1,2345", ",123", "1,,234", "0,123", "1,234,", "1.234,50",
                                  "12,50.0", "١٢"])
def test_other_commas_are_refused_with_how_to_type(text: str) -> None:
    with pytest.raises(AmountError, match="1,234.50"):
        parse_yuan(text)
    with pytest.raises(AmountError, match="1,234.50"):
        parse_signed_yuan(text)
