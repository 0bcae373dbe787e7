"""A small synthetic image task folder for lmms-eval, written offline: for the demo, the tests and CI.

``write_sample_task(DIR)`` creates ``DIR/futuremask_sample/`` with task YAMLs, their ``utils.py`` and the data
(PNG images plus a JSONL file), to be found by ``lmms-eval --include_path DIR``. Two tasks exercise both request
types: ``futuremask_sample_colour`` (generate_until, 1-3 interleaved images) and ``futuremask_sample_choice``
(multiple_choice, scored by log-likelihood). A tiny random model scores at chance; the pipeline is what is real.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

COLOURS = {"red": (220, 30, 30), "green": (30, 170, 60), "blue": (30, 60, 220), "yellow": (240, 220, 40)}

TASK_NAMES = ("futuremask_sample_colour", "futuremask_sample_choice")
GROUP_NAME = "futuremask_sample"

_UTILS = '''"""Glue for the synthetic futuremask_sample tasks (written by lmms-futuremask sample-task)."""

from pathlib import Path

from PIL import Image

DATA_DIR = Path(__file__).resolve().parent / "data"


def doc_to_visual(doc):
    return [Image.open(DATA_DIR / name).convert("RGB") for name in doc["images"]]


def doc_to_text(doc):
    return doc["question"]


def doc_to_choice(doc):
    return doc["choices"]


def doc_to_target(doc):
    return doc["choices"].index(doc["answer"])


def process_results(doc, results):
    prediction = results[0].strip().lower().rstrip(".")
    return {"exact_match": float(prediction == doc["answer"])}
'''

_COLOUR_YAML = """task: futuremask_sample_colour
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_visual: !function utils.doc_to_visual
doc_to_text: !function utils.doc_to_text
doc_to_target: answer
generation_kwargs:
  max_new_tokens: 8
  temperature: 0
  until: ["\\n"]
process_results: !function utils.process_results
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""

_CHOICE_YAML = """task: futuremask_sample_choice
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_visual: !function utils.doc_to_visual
doc_to_text: !function utils.doc_to_text
doc_to_choice: !function utils.doc_to_choice
doc_to_target: !function utils.doc_to_target
target_delimiter: " "
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""

_GROUP_YAML = """group: futuremask_sample
task:
  - futuremask_sample_colour
  - futuremask_sample_choice
"""


def _write_image(path: Path, rgb: tuple[int, int, int], size: tuple[int, int]) -> None:
    from PIL import Image

    Image.new("RGB", size, rgb).save(path)


def _docs(n_docs: int, rng: random.Random, image_dir: Path) -> list[dict]:
    names = list(COLOURS)
    docs = []
    for doc_id in range(n_docs):
        n_images = 1 + doc_id % 3
        colours = [rng.choice(names) for _ in range(n_images)]
        images = []
        for k, colour in enumerate(colours):
            name = f"doc{doc_id}_img{k}.png"
            _write_image(image_dir / name, COLOURS[colour], (40 + 8 * k, 48))
            images.append(name)
        target = rng.randrange(n_images)
        if n_images == 1:
            question = "What colour is the image? Answer with one word."
        else:
            slots = " ".join(f"Image {k + 1}: <image>" for k in range(n_images))
            question = f"{slots}\nWhat colour is image {target + 1}? Answer with one word."
        docs.append(
            {
                "id": doc_id,
                "images": images,
                "question": question,
                "answer": colours[target],
                "choices": names,
            }
        )
    return docs


def write_sample_task(directory: str | Path, n_docs: int = 12, seed: int = 0) -> Path:
    """Write the task folder under ``directory``; returns the folder to pass to ``--include_path``."""
    root = Path(directory).resolve()
    task_dir = root / GROUP_NAME
    image_dir = task_dir / "data"
    image_dir.mkdir(parents=True, exist_ok=True)
    docs = _docs(n_docs, random.Random(seed), image_dir)
    data_file = image_dir / "docs.jsonl"
    data_file.write_text("".join(json.dumps(doc) + "\n" for doc in docs))
    (task_dir / "utils.py").write_text(_UTILS)
    (task_dir / "futuremask_sample_colour.yaml").write_text(_COLOUR_YAML.format(data=json.dumps(str(data_file))))
    (task_dir / "futuremask_sample_choice.yaml").write_text(_CHOICE_YAML.format(data=json.dumps(str(data_file))))
    (task_dir / "futuremask_sample.yaml").write_text(_GROUP_YAML)
    return root
