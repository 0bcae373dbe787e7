"""A synthetic MileBench in the official on-disk layout, for tests, demos and CI (no download).

All 29 task folders, both question types, image counts from 1 to needle scale (> 31, "Many"), ``{table#k}``
placeholders with repeated image paths (MMCoQA-style), placeholders inside choices, GPR1200's letterless options
and CLEVR-Change's adjacent images. Contents are random: scores on it mean nothing.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from .catalog import TASKS
from .scoring import image_quantity_level

OPEN_ENDED = {"ALFRED", "CLEVR-Change", "IEdit", "Spot-the-Diff", "MMCoQA"}
NEEDLE = {"TextNeedleInAHaystack", "ImageNeedleInAHaystack"}
WORDS = "red green blue left right up down open close car person dog table door cup moved appeared".split()


def _image(path: Path, rng: random.Random, size: tuple[int, int] | None = None) -> None:
    """A small flat-colour image, or (``size`` given) one of that size filled with noise, as costly to decode and
    resize as a photograph of that size."""
    from PIL import Image

    if size is not None:
        Image.frombytes("RGB", size, rng.randbytes(size[0] * size[1] * 3)).save(path)
        return
    size = (rng.choice([24, 32, 40]), rng.choice([24, 32]))
    Image.new("RGB", size, tuple(rng.randrange(256) for _ in range(3))).save(path)


def _sentence(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def _sample(folder: str, sample_id: int, rng: random.Random, image_names: list[str]) -> dict:
    n = len(image_names)
    slots = " ".join(f"{{image#{k}}}" for k in range(1, n + 1))
    instance: dict = {"images_path": image_names}
    if folder == "CLEVR-Change":
        instance["context"] = "{image#1}{image#2}Difference:"
    elif folder == "MMCoQA":
        images = " ".join(f"{{image#{k}}}" for k in range(2, n + 1))
        instance["context"] = f"Global Table: {{table#1}} Context: {images} Question: {_sentence(rng, 5)}? Answer:"
    elif folder == "GPR1200":
        instance["context"] = " ".join(f"{{image#{k}}}" for k in range(2, n + 1)) + " Which image matches?"
    elif folder in NEEDLE:
        instance["context"] = f"{slots} Question: what is the password hidden in the images?"
    else:
        instance["context"] = f"{slots}\nQuestion: {_sentence(rng, 6)}?"
    if folder in OPEN_ENDED or folder in NEEDLE:
        response = str(rng.randrange(1000, 9999)) if folder in NEEDLE else _sentence(rng, 4)
    else:
        n_choices = 30 if folder == "GPR1200" else 4
        choices = [f"{_sentence(rng, 2)} {i}" for i in range(n_choices)]
        if folder == "GPR1200":
            choices[0] = "{image#1}"  # a placeholder inside a choice
        instance["choice_list"] = choices
        response = rng.choice(choices)
    return {
        "sample_id": sample_id,
        "task_instruction_id": sample_id % 2,
        "task_instance": instance,
        "response": response,
        "image_quantity_level": image_quantity_level(n),
    }


def _image_count(folder: str, index: int) -> int:
    if folder in NEEDLE:
        return 32 + index % 4  # needle scale: "Many"
    if folder == "CLEVR-Change":
        return 2
    if folder == "MMCoQA":
        return 3
    return (2, 5, 7)[index % 3]  # Few and Medium


def write_fake_milebench(
    directory: str | Path,
    samples_per_task: int = 4,
    seed: int = 0,
    image_size: tuple[int, int] | None = None,
    folders: list[str] | None = None,
) -> Path:
    """Write the 29 task folders (or those named in ``folders``) under ``directory``; returns it (use it as
    ``MILEBENCH_DIR``). ``image_size``: photograph-sized noise images instead of tiny flat ones (benchmarks)."""
    root = Path(directory)
    rng = random.Random(seed)
    for task in TASKS:
        folder = task.folder
        if folders is not None and folder not in folders:
            continue
        image_dir = root / folder / "images"
        image_dir.mkdir(parents=True, exist_ok=True)
        data = []
        for index in range(samples_per_task):
            names = [f"{index}_{k}.png" for k in range(_image_count(folder, index))]
            for name in names:
                _image(image_dir / name, rng, image_size)
            if folder == "MMCoQA":
                names = [names[0], *names]  # the table image appears twice, as upstream
            data.append(_sample(folder, index, rng, names))
        question_type = "open-ended" if folder in OPEN_ENDED or folder in NEEDLE else "multi-choice"
        meta = {
            "dataset": folder,
            "split": "test",
            "num_sample": samples_per_task,
            "question_type": question_type,
            "task_instruction": [
                f"Synthetic {folder} instruction. Answer the question about the images. ",
                f"Another synthetic {folder} instruction. ",
            ],
        }
        (root / folder / f"{folder}.json").write_text(json.dumps({"meta_data": meta, "data": data}, indent=1))
    return root
