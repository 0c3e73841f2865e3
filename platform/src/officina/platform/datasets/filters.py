"""Row filters for derived versions: ``[{"column", "op", "value"}]``, every condition must hold."""
from __future__ import annotations

from typing import Any

import pandas as pd

from officina.platform.errors import Invalid

OPS = ("==", "!=", "<", "<=", ">", ">=", "in", "not_in", "is_null", "not_null")
_NO_VALUE = ("is_null", "not_null")


def validate_filters(filters: Any, columns: list[str]) -> list[dict[str, Any]]:
    """Check a filter list against a version's columns; return it normalised."""
    if filters is None or filters == []:
        return []
    if not isinstance(filters, list):
        raise Invalid("filter must be a list of {column, op, value}", field="filter")
    out = []
    for cond in filters:
        if not isinstance(cond, dict) or set(cond) - {"column", "op", "value"}:
            raise Invalid("each filter is {column, op, value}", field="filter")
        column, op = cond.get("column"), cond.get("op")
        if column not in columns:
            raise Invalid(f"filter column {column!r} does not exist (columns: {', '.join(columns[:20])})",
                          field="filter", column=str(column))
        if op not in OPS:
            raise Invalid(f"filter op {op!r} is not one of {' '.join(OPS)}", field="filter")
        value = cond.get("value")
        if op in ("in", "not_in") and not isinstance(value, list):
            raise Invalid(f"op {op} needs a list value", field="filter")
        if op not in _NO_VALUE and op not in ("in", "not_in") and not isinstance(value, (str, int, float, bool)):
            raise Invalid(f"op {op} needs a number or text value", field="filter")
        out.append({"column": column, "op": op, "value": None if op in _NO_VALUE else value})
    return out


def apply_filters(frame: pd.DataFrame, filters: list[dict[str, Any]]) -> pd.DataFrame:
    """The rows of ``frame`` where every condition holds (original order kept).

    Raises:
        Invalid: a comparison between a column and a value of another type.
    """
    keep = pd.Series(True, index=frame.index)
    for cond in filters:
        col, op, value = frame[cond["column"]], cond["op"], cond["value"]
        try:
            if op == "is_null":
                mask = col.isna()
            elif op == "not_null":
                mask = col.notna()
            elif op == "in":
                mask = col.isin(value)
            elif op == "not_in":
                mask = ~col.isin(value)
            else:
                mask = {"==": col.__eq__, "!=": col.__ne__, "<": col.__lt__, "<=": col.__le__,
                        ">": col.__gt__, ">=": col.__ge__}[op](value)
        except TypeError:
            raise Invalid(f"cannot compare column {cond['column']!r} ({col.dtype}) with {value!r}",
                          field="filter", column=cond["column"]) from None
        keep &= mask.fillna(False).astype(bool)
    return frame[keep]
