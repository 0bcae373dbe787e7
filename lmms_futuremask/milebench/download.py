"""Fetch, extract, verify and repair the official MileBench release (FreedomIntelligence/MileBench, six tar.gz parts).

Resumable and repairing: an interrupted download resumes (huggingface_hub keeps partial files); a part whose
extraction finished is stamped with the task folders it holds and skipped next time *only if those folders still
verify*, so a deleted task folder or a damaged JSON is extracted again by simply rerunning the command. Every task
folder is verified at the end: its JSON parses and validates, and every image it references exists inside it.

Archives are untrusted input: members are extracted with tarfile's ``data`` filter, links of any kind are refused
(MileBench's archives hold none), and a failed extraction leaves no staging folder behind.
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
    """The verdict of :func:`verify` on one task folder."""

    folder: str
    ok: bool
    detail: str


def _fetch_archive(name: str, source: str | None, cache: Path) -> Path:
    """A local path to one archive: from a local ``source`` folder, else downloaded from the Hub (resumable)."""
    if source is not None:
        path = Path(source) / name
        if not path.is_file():
            raise MileBenchDataError(f"{path} is missing from --source {source}")
        return path
    from huggingface_hub import hf_hub_download

    return Path(hf_hub_download(REPO_ID, name, repo_type="dataset", local_dir=cache))


def _extract(archive: Path, root: Path) -> list[str]:
    """Extract into a staging folder, then move every task folder found inside to ``root/<Task>``."""
    from tqdm import tqdm

    staging = root / f".extract-{archive.name}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tqdm(tar, desc=f"extracting {archive.name}", unit=" files"):
                if member.issym() or member.islnk():
                    raise MileBenchDataError(
                        f"{archive}: member {member.name!r} is a link ({'symbolic' if member.issym() else 'hard'}); "
                        "MileBench archives hold no links, so this archive is refused"
                    )
                tar.extract(member, staging, filter="data")
        moved = []
        for json_file in sorted(staging.rglob("*.json")):
            folder = json_file.parent
            if folder.name in BY_FOLDER and json_file.name == f"{folder.name}.json":
                target = root / folder.name
                shutil.rmtree(target, ignore_errors=True)
                shutil.move(str(folder), str(target))
                moved.append(folder.name)
        return moved
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def check_task(folder: str, root: str | Path) -> TaskCheck:
    """The JSON loads and validates, and every referenced image is a file inside the task's images folder."""
    try:
        _, items = load_task(folder, root)
    except MileBenchDataError as error:
        return TaskCheck(folder, False, str(error))
    image_dir = (Path(root) / folder / "images").resolve()
    missing, outside = [], []
    for item in items:
        for name in item["task_instance"]["images_path"]:
            path = (image_dir / name).resolve()
            if not path.is_relative_to(image_dir):
                outside.append(name)
            elif not path.is_file():
                missing.append(name)
    if outside:
        return TaskCheck(folder, False, f"{len(outside)} image path(s) lead outside {image_dir}, e.g. {outside[0]}")
    if missing:
        return TaskCheck(folder, False, f"{len(missing)} image(s) missing under {image_dir}, e.g. {missing[0]}")
    return TaskCheck(folder, True, f"{len(items)} samples")


def verify(root: str | Path) -> list[TaskCheck]:
    """One check per task (see :func:`check_task`)."""
    return [check_task(task.folder, root) for task in TASKS]


def _stamped_tasks(stamp: Path) -> list[str]:
    return [line for line in stamp.read_text().splitlines() if line]


def download_milebench(
    root: str | Path,
    source: str | None = None,
    parts: tuple[str, ...] = PARTS,
    force: bool = False,
    keep_archives: bool = False,
    log=print,
) -> list[TaskCheck]:
    """Fetch and extract the parts not yet done or no longer intact, then verify every task folder."""
    root = Path(root).expanduser()
    stamps = root / ".parts"
    stamps.mkdir(parents=True, exist_ok=True)
    cache = root / ".archives"
    for name in parts:
        stamp = stamps / f"{name}.done"
        if stamp.exists() and not force:
            broken = [f for f in _stamped_tasks(stamp) if not check_task(f, root).ok]
            if not broken:
                log(f"{name}: already extracted, skipped (its task folders verify)")
                continue
            log(f"{name}: extracting again to repair {', '.join(broken)}")
            stamp.unlink()
        archive = _fetch_archive(name, source, cache)
        try:
            moved = _extract(archive, root)
        except (tarfile.TarError, EOFError, OSError) as error:
            if source is not None:
                raise MileBenchDataError(
                    f"{archive} is damaged ({error}); replace it in --source {source} (or drop --source to "
                    "download it) and run the command again"
                ) from error
            archive.unlink(missing_ok=True)
            raise MileBenchDataError(
                f"{archive} is damaged ({error}); it was deleted, run the command again to download it afresh"
            ) from error
        stamp.write_text("\n".join(moved) + "\n")
        log(f"{name}: {len(moved)} task folder(s): {', '.join(moved)}")
        if source is None and not keep_archives:
            archive.unlink(missing_ok=True)
    return verify(root)
