"""The `[credit]` section of config.toml: defaults, credits turned into mc, and refusals."""

from __future__ import annotations

import pytest

from hearth.node.commands.common import CommandError
from hearth.node.config import TEMPLATE, parse
from hearth.protocol.credit import CreditConfig


def test_the_template_and_an_old_file_without_the_section_give_the_defaults() -> None:
    assert parse(TEMPLATE).credit == CreditConfig()
    assert parse("[limits]\ncores = 1\n").credit == CreditConfig()


def test_credits_in_the_file_become_milli_credits() -> None:
    credit = parse("[credit]\nunknown_payer = 2.5\nunknown_total_receipts = 9\n").credit
    assert credit.unknown_payer_mc == 2_500 and credit.unknown_total_receipts == 9
    assert credit.unknown_total_mc == CreditConfig().unknown_total_mc


@pytest.mark.parametrize(
    "text", ["[credit]\nunknown_payer = -1\n", "[credit]\nunknown_total = \"x\"\n",
             "[credit]\nlines = 3\n"],
)  # fmt: skip
def test_bad_credit_values_are_one_line_errors(text: str) -> None:
    with pytest.raises(CommandError, match="credit"):
        parse(text)
