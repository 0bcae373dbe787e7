"""What the MileBench lmms-eval tasks call: docs, prompt text, images, per-sample scores and their aggregation.

No lmms-eval import here; ``tasks/milebench/utils.py`` only wires these into lmms-eval's task API.

Metrics of a task: its official metric under its own name (``accuracy``, or ``rouge_l_f`` for open-ended tasks
outside the Needle/MMCoQA routes), the same split by image quantity (``<metric>_few/_medium/_many``, 0 for an empty
bucket, as upstream), ``score`` (the official metric again, the one groups average, unweighted), and
``failed_samples`` (answers that are error records or that the official scorer cannot score; they count as 0).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

from ..runtime.errors import ERROR_MARKER
from .catalog import BY_TASK_NAME
from .data import load_task, open_image
from .prompt import IMAGE_TEXT, full_prompt
from .scoring import ScoringError, score_prediction

logger = logging.getLogger("lmms_futuremask.milebench")
LEVELS = ("Few", "Medium", "Many")

#: The kind of lmms-eval model the tasks being built are for: ``simple`` (context, visuals) or ``chat``
#: (``doc_to_messages``). Set while lmms-eval loads tasks (see ``model_wrappers/manifest.py``).
TASK_TYPE: ContextVar[str] = ContextVar("milebench_task_type", default="simple")


def official_metric(folder: str, question_type: str) -> str:
    """``accuracy`` or ``rouge_l_f``, as the official result key (``Accuracy`` / ``Rouge-L f``) would say."""
    if "NeedleInAHaystack" in folder or "MMCoQA" in folder or question_type != "open-ended":
        return "accuracy"
    return "rouge_l_f"


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def _aggregate_all(items: list[dict]) -> float:
    return _mean([item["score"] for item in items])


def _aggregate_level(level: str) -> Callable[[list[dict]], float]:
    def aggregate(items: list[dict]) -> float:
        return _mean([item["score"] for item in items if item["level"] == level])

    aggregate.__name__ = f"mean_{level.lower()}"
    return aggregate


def _count_failed(items: list[dict]) -> float:
    return float(sum(item["failed"] for item in items))


def metric_list(task_name: str, root: str | None = None) -> list[dict[str, Any]]:
    """lmms-eval ``metric_list`` for one task, named after its question type (read from the data)."""
    folder = BY_TASK_NAME[task_name].folder
    meta, _ = load_task(folder, root)
    name = official_metric(folder, meta["question_type"])
    metrics = [{"metric": name, "aggregation": _aggregate_all, "higher_is_better": True}]
    metrics += [
        {"metric": f"{name}_{level.lower()}", "aggregation": _aggregate_level(level), "higher_is_better": True}
        for level in LEVELS
    ]
    metrics.append({"metric": "score", "aggregation": _aggregate_all, "higher_is_better": True})
    metrics.append({"metric": "failed_samples", "aggregation": _count_failed, "higher_is_better": False})
    return metrics


def doc_to_text(doc: dict[str, Any]) -> str:
    """The untruncated official prompt; ``llava_futuremask`` re-renders it with truncation from the doc itself."""
    return full_prompt(doc)


def doc_to_visual(doc: dict[str, Any]) -> list[Any]:
    """All the sample's images, in order (opened when the model asks for them)."""
    return [open_image(doc, i) for i in range(len(doc["images"]))]


def doc_to_messages(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The official prompt as one chat user turn, each image in its slot (for lmms-eval's chat models): the
    untruncated text, every image, no template (the model applies its own). Images pair with slots from the right,
    as MileBench's dataset code pairs them; images without a slot go first, slots without an image are dropped."""
    pieces = full_prompt(doc).split(IMAGE_TEXT)
    images = doc_to_visual(doc)
    slots = len(pieces) - 1
    content: list[dict[str, Any]] = [{"type": "image", "url": image} for image in images[: max(0, len(images) - slots)]]
    first_filled = slots - min(slots, len(images))  # slots before this one have no image left
    paired = images[len(images) - min(slots, len(images)) :]
    for index, piece in enumerate(pieces):
        if index > first_filled:
            content.append({"type": "image", "url": paired[index - 1 - first_filled]})
        if piece:
            content.append({"type": "text", "text": piece})
    return [{"role": "user", "content": content}]


def sample_score(doc: dict[str, Any], prediction: str) -> tuple[float, bool]:
    """``(official score, failed)``: an error record or an unscorable prediction scores 0 and is logged."""
    where = f"{doc['milebench_task']} sample {doc['sample_id']}"
    if prediction.startswith(ERROR_MARKER):
        logger.error("%s: the model recorded an error instead of an answer: %s", where, prediction)
        return 0.0, True
    try:
        score = score_prediction(
            doc["milebench_task"],
            doc["question_type"],
            prediction.strip(),
            doc["answer"],
            doc["choices"] if doc["has_choices"] else None,
        )
    except ScoringError as error:
        logger.error("%s: the official scorer cannot score %r (%s); counted as 0", where, prediction[:200], error)
        return 0.0, True
    return score, False


def process_results(doc: dict[str, Any], results: list[str]) -> dict[str, dict]:
    """lmms-eval's ``process_results``: the sample's official metric (and ``score``, ``failed_samples``, the levels)."""
    score, failed = sample_score(doc, results[0])
    folder = doc["milebench_task"]
    item = {"score": score, "level": doc["image_quantity_level"], "failed": failed, "sample_id": doc["sample_id"]}
    name = official_metric(folder, doc["question_type"])
    values = {name: item, "score": item, "failed_samples": item}
    values.update({f"{name}_{level.lower()}": item for level in LEVELS})
    return values


def summarize(docs: list[dict[str, Any]], predictions: list[str]) -> dict[str, float]:
    """One task's metrics from its docs and predictions, as the lmms-eval task would report them."""
    items = [process_results(doc, [pred])["score"] for doc, pred in zip(docs, predictions, strict=True)]
    name = official_metric(docs[0]["milebench_task"], docs[0]["question_type"])
    summary = {name: _aggregate_all(items)}
    summary.update({f"{name}_{level.lower()}": _aggregate_level(level)(items) for level in LEVELS})
    summary.update({"score": summary[name], "failed_samples": _count_failed(items), "samples": float(len(items))})
    return summary
