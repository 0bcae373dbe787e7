"""Future-aware causal masks for vision-language models, as a transformers patch and an lmms-eval plugin."""

from .attention.integration import current_mode, disable, enable
from .attention.masks import MODES, RELAXATIONS, build_mask, mask_function

__version__ = "0.1.0"

__all__ = ["MODES", "RELAXATIONS", "build_mask", "mask_function", "enable", "disable", "current_mode", "__version__"]
