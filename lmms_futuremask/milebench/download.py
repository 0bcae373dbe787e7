"""Fetch, extract and verify the official MileBench release (FreedomIntelligence/MileBench, six tar.gz parts).

Resumable at two levels: an interrupted download resumes (huggingface_hub keeps partial files), and a part that was
fully extracted is skipped next time (a stamp per part). Every task folder is verified at the end: its JSON parses
and validates, and every image it references exists.
"""

from __future__ import annotations

import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path

from .catalog import BY_FOLDER, TASKS
from .data import MileBenchDataError, load_task

REPO_ID = "FreedomIntelligence/MileBench"
PARTS = tuple(f"MileBench_part{i}.tar.gz" for i in range(6))
LICENSE_NOTE = "MileBench data: CC BY-NC 4.0 (non-commercial use)."


@dataclass
class TaskCheck:
    folder: str
    ok: bool
    detail: str


def _fetch_archive(name: str, source: str | None, cache: Path) -> Path:
    """A local path to one archive: from a local ``source`` folder, else downloaded from the Hub (resumable)."""
    if source is not None:
        path = Path(source) / name
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing from --source {source}")
        return path
    from huggingface_hub import hf_hub_download

    return Path(hf_hub_download(REPO_ID, name, repo_type="dataset", local_dir=cache))


def _extract(archive: Path, root: Path) -> list[str]:
    """Extract into a staging folder, then move every task folder found inside to ``root/<Task>``."""
    from tqdm import tqdm

    staging = root / f".extract-{archive.name}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    with tarfile.open(archive, "r:gz") as tar:
        for member in tqdm(tar, desc=f"extracting {archive.name}", unit=" files"):
            tar.extract(member, staging, filter="data")
    moved = []
    for json_file in sorted(staging.rglob("*.json")):
        folder = json_file.parent
        if folder.name in BY_FOLDER and json_file.name == f"{folder.name}.json":
            target = root / folder.name
            shutil.rmtree(target, ignore_errors=True)
            shutil.move(str(folder), str(target))
            moved.append(folder.name)
    shutil.rmtree(staging, ignore_errors=True)
    return moved


def verify(root: str | Path) -> list[TaskCheck]:
    """One check per task: the JSON loads and validates, and every referenced image file exists."""
    checks = []
    for task in TASKS:
        try:
            _, items = load_task(task.folder, root)
        except MileBenchDataError as error:
            checks.append(TaskCheck(task.folder, False, str(error)))
            continue
        image_dir = Path(root) / task.folder / "images"
        missing = [p for item in items for p in item["task_instance"]["images_path"] if not (image_dir / p).is_file()]
        if missing:
            detail = f"{len(missing)} image(s) missing under {image_dir}, e.g. {missing[0]}"
            checks.append(TaskCheck(task.folder, False, detail))
        else:
            checks.append(TaskCheck(task.folder, True, f"{len(items)} samples"))
    return checks


def download_milebench(
    root: str | Path,
    source: str | None = None,
    parts: tuple[str, ...] = PARTS,
    force: bool = False,
    keep_archives: bool = False,
) -> list[TaskCheck]:
    """Fetch and extract the parts not yet done, then verify every task folder."""
    root = Path(root).expanduser()
    stamps = root / ".parts"
    stamps.mkdir(parents=True, exist_ok=True)
    cache = root / ".archives"
    for name in parts:
        stamp = stamps / f"{name}.done"
        if stamp.exists() and not force:
            print(f"{name}: already extracted, skipped")
            continue
        archive = _fetch_archive(name, source, cache)
        try:
            moved = _extract(archive, root)
        except (tarfile.TarError, EOFError, OSError) as error:
            raise MileBenchDataError(f"{archive} is damaged ({error}); delete it and run the command again") from error
        stamp.write_text("\n".join(moved) + "\n")
        print(f"{name}: {len(moved)} task folder(s): {', '.join(moved)}")
        if source is None and not keep_archives:
            archive.unlink(missing_ok=True)
    return verify(root)
