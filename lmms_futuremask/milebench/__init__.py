"""MileBench (29 multi-image tasks) with the official protocol: catalog, data, prompts and scorer."""

from .catalog import GROUPS, TASKS, MileTask
from .scoring import ScoringError, image_quantity_level, normalize, score_prediction

__all__ = ["GROUPS", "TASKS", "MileTask", "ScoringError", "image_quantity_level", "normalize", "score_prediction"]
