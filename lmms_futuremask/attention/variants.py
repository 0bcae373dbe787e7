"""Named variants: a mode, optionally with ``+merge`` (the paper's light variant with its default knobs)."""

from __future__ import annotations

from .masks import check_mode

#: The paper's seven variants (Table 4 rows), in its order.
PAPER_VARIANTS = (
    "original",
    "future_v2t",
    "future_v2v",
    "future",
    "future_v2v+merge",
    "future_v2t+merge",
    "future+merge",
)


def parse_variant(variant: str) -> tuple[str, str]:
    """``"future_v2v+merge"`` -> ``("future_v2v", "kernel")``; unknown names raise naming the valid form."""
    mode, plus, suffix = variant.partition("+")
    if plus and suffix != "merge":
        raise ValueError(f"unknown variant {variant!r}; use MODE or MODE+merge, e.g. future_v2v+merge")
    return check_mode(mode), "kernel" if plus else "none"


def variant_name(mode: str, merge: str = "none") -> str:
    """The inverse of :func:`parse_variant`: ``("future_v2v", "kernel")`` -> ``"future_v2v+merge"``."""
    return f"{mode}+merge" if merge == "kernel" else mode


def variant_model_args(variant: str) -> str:
    """The lmms-eval model_args fragment of a variant: ``"mode=future_v2v,merge=kernel"``."""
    mode, merge = parse_variant(variant)
    return f"mode={mode}" if merge == "none" else f"mode={mode},merge={merge}"
