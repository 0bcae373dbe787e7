"""Read MileBench from its official on-disk layout, validating as we go; images are opened only when used.

Layout: ``<MILEBENCH_DIR>/<Task>/<Task>.json`` (``{"meta_data": {...}, "data": [...]}``) and
``<MILEBENCH_DIR>/<Task>/images/``. Every error names the file, the task and (where there is one) the sample.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Any

from ..runtime.fingerprint import digest, file_digest, file_stamp, folder_stamp
from ..validation import UserError
from .catalog import TASKS, MileTask, task_by_folder
from .scoring import QUESTION_TYPES, image_quantity_level

logger = logging.getLogger("lmms_futuremask.milebench")

ENV_VAR = "MILEBENCH_DIR"
DEFAULT_DIR = Path("~/.cache/lmms-futuremask/MileBench")
DOWNLOAD_HINT = "lmms-futuremask download-milebench --dir {root}"


class MileBenchDataError(UserError):
    """The MileBench folder, a task file or a sample is missing or malformed; the message says which and how to fix."""


def data_dir(root: str | os.PathLike | None = None) -> Path:
    """The MileBench folder: ``root``, else ``$MILEBENCH_DIR``, else ``~/.cache/lmms-futuremask/MileBench``."""
    return Path(root or os.environ.get(ENV_VAR) or DEFAULT_DIR).expanduser()


def task_file(folder: str, root: str | os.PathLike | None = None) -> Path:
    """The official JSON of a task: ``<root>/<folder>/<folder>.json``."""
    return data_dir(root) / folder / f"{folder}.json"


def _snake(name: str) -> str:
    return re.sub(r"(?<=[a-z])(?=[A-Z])", "_", name).replace("-", "_").lower()


def _missing_task_error(task: MileTask, root: Path) -> MileBenchDataError:
    expected = root / task.folder / f"{task.folder}.json"
    hint = DOWNLOAD_HINT.format(root=root)
    if not root.is_dir():
        return MileBenchDataError(
            f"{task.task_name}: the MileBench folder {root} does not exist. Download it with `{hint}` "
            f"or point ${ENV_VAR} at an existing copy."
        )
    old_name = _snake(task.folder)
    if old_name != task.folder and (root / old_name).is_dir():
        return MileBenchDataError(
            f"{task.task_name}: {root} holds an older MileBench release ('{old_name}/' instead of "
            f"'{task.folder}/'). Re-download the current release with `{hint} --force`."
        )
    missing = [t.folder for t in TASKS if not (root / t.folder / f"{t.folder}.json").is_file()]
    others = [f for f in missing if f != task.folder]
    also = f" {len(others)} other task(s) are missing too: {', '.join(others)}." if others else ""
    return MileBenchDataError(
        f"{task.task_name}: expected {expected}, which is missing (a partial download?).{also} Run `{hint}` to "
        "fetch, repair and verify the missing parts."
    )


def _require(condition: bool, where: str, message: str) -> None:
    if not condition:
        raise MileBenchDataError(f"{where}: {message}")


def load_task(folder: str, root: str | os.PathLike | None = None) -> tuple[dict, list[dict]]:
    """``(meta_data, data)`` of one task, validated: the file, its structure and every sample's fields."""
    task = task_by_folder(folder)
    root = data_dir(root)
    path = task_file(folder, root)
    if not path.is_file():
        raise _missing_task_error(task, root)
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise MileBenchDataError(f"{path}: not valid JSON ({error}); re-download this task") from error
    _require(isinstance(content, dict) and {"meta_data", "data"} <= set(content), str(path), "needs meta_data and data")
    meta, items = content["meta_data"], content["data"]
    _require(isinstance(meta.get("task_instruction"), list), str(path), "meta_data.task_instruction must be a list")
    _require(
        meta.get("question_type") in QUESTION_TYPES,
        str(path),
        f"meta_data.question_type must be one of {QUESTION_TYPES}, got {meta.get('question_type')!r}",
    )
    _require(isinstance(items, list) and len(items) > 0, str(path), "data must be a non-empty list")
    for index, item in enumerate(items):
        where = f"{path} sample {item.get('sample_id', f'#{index}') if isinstance(item, dict) else f'#{index}'}"
        _require(isinstance(item, dict), where, "each sample must be an object")
        instance = item.get("task_instance")
        _require(isinstance(instance, dict), where, "missing task_instance")
        _require({"sample_id", "response"} <= set(item), where, "needs sample_id and response")
        instruction_id = item.get("task_instruction_id")
        _require(
            isinstance(instruction_id, int) and 0 <= instruction_id < len(meta["task_instruction"]),
            where,
            f"task_instruction_id {instruction_id!r} does not index meta_data.task_instruction",
        )
        _require(isinstance(instance.get("context"), str), where, "task_instance.context must be a string")
        _require(isinstance(instance.get("images_path"), list), where, "task_instance.images_path must be a list")
        if meta["question_type"] == "multi-choice":
            _require(isinstance(instance.get("choice_list"), list), where, "multi-choice samples need a choice_list")
    return meta, items


def load_docs(folder: str, root: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """One flat record per sample, as lmms-eval docs: everything the prompt, the images and the scorer need."""
    meta, items = load_task(folder, root)
    image_dir = data_dir(root) / folder / "images"
    content = file_digest(task_file(folder, root))
    docs = []
    for item in items:
        instance = item["task_instance"]
        choices = instance.get("choice_list")
        images = [str(p) for p in instance["images_path"]]
        docs.append(
            {
                "milebench_task": folder,
                "sample_id": str(item["sample_id"]),
                "question_type": meta["question_type"],
                "instruction": meta["task_instruction"][item["task_instruction_id"]],
                "context": instance["context"],
                "has_choices": choices is not None,
                "choices": [str(c) for c in choices or []],
                "images": images,
                "image_dir": str(image_dir),
                "answer": str(item["response"]),
                "image_quantity_level": image_quantity_level(len(images)),
                # What a cached answer of this sample depends on in the data: the task file and its images.
                "data_identity": digest([str(image_dir), content, [file_stamp(image_dir / p) for p in images]]),
            }
        )
    return docs


def image_path(doc: dict[str, Any], index: int) -> Path:
    """The file of a doc's ``index``-th image; a path that leaves the task's images folder is a data error."""
    image_dir = Path(doc["image_dir"])
    path = image_dir / doc["images"][index]
    if not path.resolve().is_relative_to(image_dir.resolve()):
        raise MileBenchDataError(
            f"{doc['milebench_task']} sample {doc['sample_id']}: image {doc['images'][index]!r} resolves to "
            f"{path.resolve()}, outside {image_dir}; MileBench images must lie inside their task folder"
        )
    return path


def image_size(doc: dict[str, Any], index: int) -> tuple[int, int]:
    """``(width, height)`` of a doc's image, from its header (the pixels are not decoded)."""
    from PIL import Image, UnidentifiedImageError

    where = f"{doc['milebench_task']} sample {doc['sample_id']}"
    path = image_path(doc, index)
    try:
        with Image.open(path) as image:
            return image.size
    except Image.DecompressionBombError as error:
        raise MileBenchDataError(f"{where}: image {path} is too large for PIL ({error})") from error
    except (OSError, UnidentifiedImageError) as error:
        raise MileBenchDataError(f"{where}: cannot read image {path} ({error})") from error


#: PIL modes whose RGB conversion clips (16/32-bit grey): the official conversion is kept, with a warning.
_WIDE_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


def open_image(doc: dict[str, Any], index: int):
    """The ``index``-th image of a doc as RGB (``Image.convert("RGB")``, as upstream's dataset code does).
    An unreadable or oversized file is an error naming it and the sample."""
    from PIL import Image, UnidentifiedImageError

    where = f"{doc['milebench_task']} sample {doc['sample_id']}"
    path = image_path(doc, index)
    try:
        with Image.open(path) as image:
            if image.mode in _WIDE_MODES:
                logger.warning(
                    "%s: image %s has %d-bit mode %s; converted to RGB as upstream does, which clips most values",
                    where,
                    path,
                    32 if image.mode in ("I", "F") else 16,
                    image.mode,
                )
            image = image.convert("RGB")
    except Image.DecompressionBombError as error:
        raise MileBenchDataError(f"{where}: image {path} is too large for PIL ({error})") from error
    except (OSError, UnidentifiedImageError) as error:
        raise MileBenchDataError(f"{where}: cannot read image {path} ({error})") from error
    return image


def data_identity(folders: list[str], root: str | os.PathLike | None = None) -> dict[str, Any]:
    """What a sweep's finished variant depends on in the data: the folder, and per task the JSON's content hash and
    the names, sizes and times of its images (cheap: one stat per file)."""
    root = data_dir(root)
    tasks = {}
    for folder in folders:
        path = task_file(folder, root)
        json_id = file_digest(path) if path.is_file() else None
        tasks[folder] = [json_id, digest(folder_stamp(root / folder / "images"))]
    return {"root": str(root.resolve()), "tasks": tasks}
