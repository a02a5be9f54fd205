"""Hypothesis strategies built from the message registry, so every new message is covered."""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

from hypothesis import strategies as st

from hearth.protocol import limits
from hearth.protocol.codec import registered_types

INTS = st.integers(min_value=limits.INT_MIN, max_value=limits.INT_MAX)


def for_type(tp: Any) -> st.SearchStrategy[Any]:
    if tp is bool:
        return st.booleans()
    if tp is int:
        return INTS
    if tp is str:
        return st.text(max_size=40)
    if tp is bytes:
        return st.binary(max_size=80)
    if typing.get_origin(tp) is tuple:
        return st.lists(for_type(typing.get_args(tp)[0]), max_size=5).map(tuple)
    if dataclasses.is_dataclass(tp):
        return for_message(tp)
    raise TypeError(tp)


def for_message(cls: Any) -> st.SearchStrategy[Any]:
    hints = typing.get_type_hints(cls)
    fields = {f.name: for_type(hints[f.name]) for f in dataclasses.fields(cls)}
    return st.builds(cls, **fields)


def any_message() -> st.SearchStrategy[Any]:
    return st.one_of([for_message(cls) for cls in registered_types().values()])
