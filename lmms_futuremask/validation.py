"""One wording for "unknown value" errors, shared by every layer (a leaf module: it imports nothing of ours)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

T = TypeVar("T")


def unknown_choice(what: str, value: object, valid: Iterable[object], noun: str = "values") -> ValueError:
    """``ValueError("unknown <what> <value>; valid <noun> are: a, b, c")``, to be raised by the caller."""
    return ValueError(f"unknown {what} {value!r}; valid {noun} are: {', '.join(str(v) for v in valid)}")


def check_choice(what: str, value: T, valid: Iterable[object], noun: str = "values") -> T:
    """Return ``value`` if it is one of ``valid``, else raise :func:`unknown_choice`'s error."""
    valid = tuple(valid)
    if value not in valid:
        raise unknown_choice(what, value, valid, noun)
    return value


class UserError(ValueError):
    """An error in what the user asked for (an argument, a folder, the data): the message says what to change.

    ``lmms-futuremask`` prints it as one line and exits 2, with no traceback.
    """
