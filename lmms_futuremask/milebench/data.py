"""Read MileBench from its official on-disk layout, validating as we go; images are opened only when used.

Layout: ``<MILEBENCH_DIR>/<Task>/<Task>.json`` (``{"meta_data": {...}, "data": [...]}``) and
``<MILEBENCH_DIR>/<Task>/images/``. Every error names the file, the task and (where there is one) the sample.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from .catalog import MileTask, task_by_folder
from .scoring import QUESTION_TYPES, image_quantity_level

ENV_VAR = "MILEBENCH_DIR"
DEFAULT_DIR = Path("~/.cache/lmms-futuremask/MileBench")
DOWNLOAD_HINT = "lmms-futuremask download-milebench --dir {root}"

_PLACEHOLDER = re.compile(r"\{(?:image|table)#(\d+)\}")


class MileBenchDataError(ValueError):
    """The MileBench folder, a task file or a sample is missing or malformed; the message says which and how to fix."""


def data_dir(root: str | os.PathLike | None = None) -> Path:
    """The MileBench folder: ``root``, else ``$MILEBENCH_DIR``, else ``~/.cache/lmms-futuremask/MileBench``."""
    return Path(root or os.environ.get(ENV_VAR) or DEFAULT_DIR).expanduser()


def task_file(folder: str, root: str | os.PathLike | None = None) -> Path:
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
    return MileBenchDataError(
        f"{task.task_name}: expected {expected}, which is missing (a partial download?). Run `{hint}` to fetch and "
        "verify the missing parts."
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


def check_placeholders(text: str, n_images: int, where: str) -> None:
    """The ``{image#k}``/``{table#k}`` of a sample (context and choices) must show each of its images once.

    Upstream would silently leave a slot without an image or attach an image without a slot; we refuse both.
    """
    found = [int(k) for k in _PLACEHOLDER.findall(text)]
    if sorted(found) != list(range(1, n_images + 1)):
        raise MileBenchDataError(
            f"{where}: the placeholders {{image#k}}/{{table#k}} (k = {sorted(found)}) do not match the "
            f"{n_images} image(s) of images_path; each image needs exactly one placeholder"
        )


def load_docs(folder: str, root: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """One flat record per sample, as lmms-eval docs: everything the prompt, the images and the scorer need."""
    meta, items = load_task(folder, root)
    image_dir = data_dir(root) / folder / "images"
    docs = []
    for item in items:
        instance = item["task_instance"]
        choices = instance.get("choice_list")
        docs.append(
            {
                "milebench_task": folder,
                "sample_id": str(item["sample_id"]),
                "question_type": meta["question_type"],
                "instruction": meta["task_instruction"][item["task_instruction_id"]],
                "context": instance["context"],
                "has_choices": choices is not None,
                "choices": [str(c) for c in choices or []],
                "images": [str(p) for p in instance["images_path"]],
                "image_dir": str(image_dir),
                "answer": str(item["response"]),
                "image_quantity_level": image_quantity_level(len(instance["images_path"])),
            }
        )
    return docs


def open_image(doc: dict[str, Any], index: int, pad_fill: tuple[int, int, int] | None = None):
    """The ``index``-th image of a doc as RGB, optionally padded to a centred square (LLaVA's ``pad``).

    An unreadable file is an error naming it and the sample.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(doc["image_dir"]) / doc["images"][index]
    try:
        with Image.open(path) as image:
            image = image.convert("RGB")
    except (OSError, UnidentifiedImageError) as error:
        raise MileBenchDataError(
            f"{doc['milebench_task']} sample {doc['sample_id']}: cannot read image {path} ({error})"
        ) from error
    return image if pad_fill is None else pad_to_square(image, pad_fill)


def pad_to_square(image, fill: tuple[int, int, int]):
    """Paste the image centred on a square of side max(w, h) filled with ``fill`` (the CLIP mean colour)."""
    from PIL import Image

    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    square = Image.new(image.mode, (side, side), fill)
    square.paste(image, ((side - width) // 2, (side - height) // 2))
    return square
