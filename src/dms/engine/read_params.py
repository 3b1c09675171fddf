"""The read query language's request parameters: parsed and range-checked, not yet compiled."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import orjson

from dms.engine.errors import InvalidRequest, LimitExceeded

__all__ = ["MAX_LIMIT", "ReadParams", "bad_param", "parse_read_params"]

MAX_LIMIT = 1000
DEFAULT_LIMIT = 50
MAX_OFFSET = 2**63 - 1  # OFFSET is a bigint in PostgreSQL
MAX_PARAM_CHARS = 65_536  # filters / search text; proxies cut URLs far shorter anyway
COUNT_MODES = ("exact", "estimated", "none")
ORDERS = ("asc", "desc")
_WHOLE = re.compile(r"[0-9]+")


@dataclass(frozen=True)
class ReadParams:
    """The query-language parameters of one read; ranges are checked on construction.

    Rules the SPEC leaves open:
    - filter depth: the top-level object is level 1, each object inside an "and"/"or" list one
      level deeper; at most 8. Terms: each operator on a column is one, each `in`/`nin` item
      is one; at most 200 in total.
    - `ne` and `nin` match exactly the rows `eq` and `in` do not, NULLs included.
    - a dict value under a column is always an operator object: compare a jsonb column with an
      object through `{"col": {"eq": {…}}}`.
    - sort: `-col` is always descending; a plain `col` follows `order` (default asc). The unique
      `id` ends every ordering, in the direction of the last key (with no `sort_by`, the
      direction `order` gives); keys after an explicit `id` are dropped since they never decide.
      NULLs sort above every value (PostgreSQL's default): last ascending, first descending.
    - an empty plain `search` and an empty search object add no condition.
    """

    filters: object = None
    search: object = None
    sort_by: str | None = None
    order: str | None = None
    limit: int = DEFAULT_LIMIT
    offset: int = 0
    fields: str | None = None
    cursor: str | None = None
    count: str = "exact"

    def __post_init__(self) -> None:
        if not _is_int(self.limit) or not 1 <= self.limit <= MAX_LIMIT:
            raise LimitExceeded(
                f"limit must be between 1 and {MAX_LIMIT}",
                errors={"limit": [f"must be a whole number from 1 to {MAX_LIMIT}"]},
            )
        if not _is_int(self.offset) or not 0 <= self.offset <= MAX_OFFSET:
            raise InvalidRequest(
                "offset must be a whole number >= 0",
                errors={"offset": [f"must be a whole number from 0 to {MAX_OFFSET}"]},
            )
        if self.order is not None and self.order not in ORDERS:
            raise bad_param("order", "must be asc or desc")
        if self.count not in COUNT_MODES:
            raise bad_param("count", "must be exact, estimated or none")
        if self.cursor is not None and self.offset:
            raise bad_param(
                "offset", "cannot be combined with cursor; the cursor marks the position"
            )


def parse_read_params(args: Mapping[str, str]) -> ReadParams:
    """Return the ReadParams in raw query-string `args` (empty means absent; others ignored)."""
    return ReadParams(
        filters=_filters_param(args.get("filters")),
        search=_search_param(args.get("search")),
        sort_by=args.get("sort_by") or None,
        order=_lower(args.get("order")),
        limit=_whole(args, "limit", DEFAULT_LIMIT),
        offset=_whole(args, "offset", 0),
        fields=args.get("fields") or None,
        cursor=args.get("cursor") or None,
        count=_lower(args.get("count")) or "exact",
    )


def _is_int(value: object) -> bool:
    return type(value) is int  # bool is an int subclass, and True is no limit


def bad_param(name: str, problem: str) -> InvalidRequest:
    """Return the 400 error for query parameter `name` and what is wrong with it."""
    return InvalidRequest(f"{name} {problem}", errors={name: [problem]})


def _lower(text: str | None) -> str | None:
    return text.lower() if text else None


def _whole(args: Mapping[str, str], name: str, default: int) -> int:
    text = args.get(name)
    if not text:
        return default
    if _WHOLE.fullmatch(text) is None:
        raise bad_param(name, "must be a whole number")
    # More digits than any bigint: out of range for both limit and offset, without int().
    return int(text) if len(text) <= 19 else MAX_OFFSET + 1


def _check_size(name: str, text: str) -> None:
    # Decoding 1 MB of JSON alone takes tens of ms; no sensible filter comes near this size.
    if len(text) > MAX_PARAM_CHARS:
        raise LimitExceeded(
            f"{name} is too long", errors={name: [f"at most {MAX_PARAM_CHARS} characters"]}
        )


def _filters_param(text: str | None) -> object:
    if not text:
        return None
    _check_size("filters", text)
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise bad_param("filters", f"is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise bad_param("filters", "must be a JSON object")
    return value


def _search_param(text: str | None) -> object:
    if not text:
        return None
    _check_size("search", text)
    # Only an object changes the meaning; anything else is searched as typed.
    if text.lstrip().startswith("{"):
        try:
            value = orjson.loads(text)
        except orjson.JSONDecodeError:
            return text
        if isinstance(value, dict):
            return value
    return text
