"""A mask per task in one run: the routing file (``--model_args ...,routing=routing.yaml``).

The paper finds the best mask task-dependent; ``lmms-futuremask select`` chooses one per task from a sweep and
writes it here. The file maps lmms-eval task names to a variant, written ``MODE`` or ``MODE+merge``::

    # chosen by lmms-futuremask select on ...
    tasks:
      milebench_tqa: future_v2t
      milebench_clevr_change: future_v2v+merge
      milebench_mmcoqa: original

A routed run prefills each request under its task's variant (tasks not listed: the run's ``mode``/``merge``); the
runner batches requests of one variant together and switches the model between batches, so its answers are those of
separate runs of each variant. The file is read and checked (YAML shape, every mode and merge, every task name)
before the model loads.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..attention.masks import check_mode
from ..attention.merge import MERGES, merge_settings
from ..attention.variants import parse_variant, variant_name
from ..validation import UserError, check_choice

#: A variant as the runtime uses it: ``(mode, merge)``.
Variant = tuple[str, str]


@dataclass(frozen=True)
class Routing:
    """Task name -> the variant its requests run under."""

    path: str
    tasks: dict[str, Variant]

    def variant_for(self, task: str) -> Variant | None:
        """The variant of ``task``'s requests; None: not routed (the run's own mode)."""
        return self.tasks.get(task)


def _variant_of(value: object, where: str) -> Variant:
    """``"future_v2v+merge"`` or ``{mode: future_v2v, merge: kernel}`` -> ``("future_v2v", "kernel")``."""
    if isinstance(value, str):
        return parse_variant(value)
    if isinstance(value, dict) and set(value) <= {"mode", "merge"} and "mode" in value:
        mode = check_mode(str(value["mode"]))
        return mode, check_choice(f"{where} merge", str(value.get("merge", "none")), MERGES)
    raise ValueError(f"{where}: give a variant as MODE or MODE+merge (e.g. future_v2v+merge), got {value!r}")


def load_routing(path: str | Path, is_known_task: Callable[[str], bool]) -> Routing:
    """Read and check a routing file; every problem raises a :class:`UserError` naming the file, the entry and the
    fix. ``is_known_task`` says whether a name is a task the harness can run (the caller knows the harness)."""
    import yaml

    source = Path(path)
    if not source.is_file():
        raise UserError(f"model_args routing={path}: no such file; give the routing.yaml lmms-futuremask select wrote")
    try:
        content = yaml.safe_load(source.read_text())
    except yaml.YAMLError as error:
        raise UserError(f"model_args routing={path}: not valid YAML ({error})") from error
    if not isinstance(content, dict) or not isinstance(content.get("tasks"), dict) or not content["tasks"]:
        raise UserError(f"model_args routing={path}: expected a mapping 'tasks:' of task name -> MODE or MODE+merge")
    unknown_keys = sorted(set(content) - {"tasks"})
    if unknown_keys:
        raise UserError(f"model_args routing={path}: unknown key(s) {unknown_keys}; the file holds only 'tasks:'")
    tasks: dict[str, Variant] = {}
    for task, value in content["tasks"].items():
        where = f"model_args routing={path}, task {task}"
        try:
            tasks[str(task)] = _variant_of(value, where)
            merge_settings(tasks[str(task)][1], tasks[str(task)][0], {})  # merge needs a future mode
        except ValueError as error:
            raise UserError(f"{where}: {error}") from error
    unknown = [task for task in tasks if not is_known_task(task)]
    if unknown:
        raise UserError(
            f"model_args routing={path}: unknown task(s) {unknown}; name lmms-eval tasks (e.g. milebench_tqa; "
            "lmms-futuremask tasks lists ours), not groups or folders"
        )
    return Routing(str(path), tasks)


def write_routing(path: str | Path, choices: dict[str, str], comment: str) -> Path:
    """Write ``choices`` (task -> variant name) as a routing file, ``comment`` as its header; returns the path."""
    for variant in choices.values():
        parse_variant(variant)
    header = "".join(f"# {line}\n" for line in comment.splitlines())
    body = "".join(f"  {task}: {variant}\n" for task, variant in sorted(choices.items()))
    path = Path(path)
    path.write_text(f"{header}tasks:\n{body}")
    return path


def describe(routing: Routing) -> str:
    """One line per routed task, for the run's log."""
    return ", ".join(f"{task}: {variant_name(*variant)}" for task, variant in sorted(routing.tasks.items()))
