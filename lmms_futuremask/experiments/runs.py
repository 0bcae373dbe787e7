"""What an lmms-eval output folder holds, read once for every comparison (``report``; a selection of modes):
scores, per-sample scores, failed samples, and everything that must be equal for two variants to be compared.

Two variants differ by their mask (``mode``, ``merge`` and the merge knobs) and nothing else, or their difference
is not the mask's: :func:`mismatches` lists what else differs between two runs (checkpoint, other model_args,
generation settings, ``--limit``, a system instruction, the samples scored, the data behind them).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..attention.variants import variant_name
from ..milebench.catalog import GROUPS
from ..runtime.model_args import EXECUTION_ONLY, VARIANT_ARGS, recorded_model_args, split_model_args
from .evalrun import failed_samples, find_results_file, headline_metrics, read_samples, sample_files, scores_of
from .sweep import COMPLETE, INCOMPLETE


@dataclass
class Run:
    """One variant's lmms-eval run."""

    variant: str
    model: str  # the checkpoint's short name (llava-1.5-7b for the paper's models)
    folder: Path
    scores: dict[str, dict[str, float]]  # task -> metric -> value (as lmms-eval reported)
    samples: dict[str, dict[int, float]] = field(default_factory=dict)  # task -> doc_id -> headline per-sample score
    failed: dict[str, int] = field(default_factory=dict)  # task -> samples that failed (scored 0)
    setup: dict[str, str] = field(default_factory=dict)  # what must match across variants, whole run
    identity: dict[str, str] = field(default_factory=dict)  # as setup, known only for sweep folders
    task_setup: dict[str, dict[str, str]] = field(default_factory=dict)  # task -> what must match for that task
    data: dict[str, dict[int, str]] = field(default_factory=dict)  # task -> doc_id -> digest of its answer + media


@dataclass(frozen=True)
class Mismatch:
    """Something other than the mask that differs between a variant's run and the reference run."""

    variant: str
    task: str | None  # None: the whole run
    what: str

    def __str__(self) -> str:
        return f"{self.variant}{'' if self.task is None else f', {self.task}'}: {self.what}"


def model_key(pretrained: str) -> str:
    """``llava-hf/llava-1.5-7b-hf`` -> ``llava-1.5-7b`` (the paper table's model names); else the folder name."""
    name = pretrained.rstrip("/").split("/")[-1].lower()
    for size in ("7b", "13b"):
        if f"llava-1.5-{size}" in name or f"llava-v1.5-{size}" in name:
            return f"llava-1.5-{size}"
    return name


def _sample_score(record: dict, metric: str) -> float | None:
    value = record.get(metric)
    if isinstance(value, dict):
        value = value.get("score")
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def expand_run_folders(paths: list[str | Path]) -> list[Path]:
    """Sweep roots expand to their variant folders; anything else is taken as one lmms-eval output folder."""
    folders = []
    for path in map(Path, paths):
        variants = sorted({p.parent for name in (COMPLETE, INCOMPLETE) for p in path.glob(f"*/{name}")})
        folders += variants or [path]
    return folders


def _status_record(folder: Path) -> dict:
    """The run a sweep recorded in a variant's folder (its checkpoint's and data's identity), else {}."""
    for name in (COMPLETE, INCOMPLETE):
        if (folder / name).is_file():
            return json.loads((folder / name).read_text()).get("run", {})
    return {}


def load_run(folder: str | Path) -> Run:
    """A variant's scores, per-sample scores, failed samples and setup, from the newest lmms-eval run in ``folder``
    (an lmms-eval ``--output_path``, or a sweep's variant folder)."""
    folder = Path(folder)
    results_file = find_results_file(folder)
    results = json.loads(results_file.read_text())
    config = results.get("config", {})
    model_name = str(config.get("model", "?"))
    args = recorded_model_args(model_name, config.get("model_args", ""))
    variant = variant_name(args.get("mode", "original"), args.get("merge", "none"))
    routing = split_model_args(config.get("model_args", "")).get("routing")  # as written, not lower-cased
    if routing:  # a routed run: a variant per task, named after its routing file
        variant = f"routed:{Path(routing).name}"
    run = Run(
        variant,
        model_key(args.get("pretrained", "?")),
        folder,
        scores_of(results_file),
    )
    run.failed = failed_samples(results_file)
    run.setup = {
        "lmms-eval model": model_name,
        **{f"model_args {k}": v for k, v in args.items() if k not in EXECUTION_ONLY + VARIANT_ARGS},
        "--limit": str(config.get("limit")),
        "--offset": str(config.get("offset", 0)),
        "--system_instruction": str(results.get("system_instruction")),
    }
    status = _status_record(folder)
    if "checkpoint" in status:
        run.identity["checkpoint files"] = _digest(status["checkpoint"])
    for task, (json_digest, _) in status.get("data", {}).get("tasks", {}).items():
        run.identity[f"MileBench {task} annotations"] = str(json_digest)
    counts = results.get("n-samples", {})
    for task, task_config in results.get("configs", {}).items():
        run.task_setup[task] = {
            "generation settings": json.dumps(task_config.get("generation_kwargs"), sort_keys=True),
            "samples": str(counts.get(task, {}).get("effective")),
        }
    for task, path in sample_files(results_file).items():
        if task not in run.scores:
            continue
        metric = next(iter(headline_metrics(run.scores[task])))
        per_doc, data = {}, {}
        for record in read_samples(path):
            doc_id = int(record["doc_id"])
            data[doc_id] = _digest([record.get("target"), record.get("input_media")])
            score = _sample_score(record, metric)
            if score is not None:
                per_doc[doc_id] = score
        run.samples[task], run.data[task] = per_doc, data
    return run


def _differences(ours: dict[str, str], theirs: dict[str, str], keys) -> list[str]:
    return [f"{key} {ours[key]!r} vs {theirs[key]!r}" for key in keys if ours[key] != theirs[key]]


def mismatches(run: Run, reference: Run) -> list[Mismatch]:
    """What differs between ``run`` and ``reference`` besides the mask (empty: comparable)."""
    found = []
    keys = sorted(set(run.setup) | set(reference.setup))
    ours, theirs = ({k: r.setup.get(k, "(none)") for k in keys} for r in (run, reference))
    found += [Mismatch(run.variant, None, text) for text in _differences(ours, theirs, keys)]
    both = sorted(set(run.identity) & set(reference.identity))
    found += [Mismatch(run.variant, None, f"{k} differ") for k in both if run.identity[k] != reference.identity[k]]
    for task in sorted(set(run.scores) & set(reference.scores) - set(GROUPS)):
        ours, theirs = run.task_setup.get(task, {}), reference.task_setup.get(task, {})
        keys = sorted(set(ours) & set(theirs))
        found += [Mismatch(run.variant, task, text) for text in _differences(ours, theirs, keys)]
        if task in run.data and task in reference.data:
            mine, base = run.data[task], reference.data[task]
            common = set(mine) & set(base)
            if set(mine) != set(base):
                found.append(
                    Mismatch(
                        run.variant,
                        task,
                        f"scored on other samples ({len(mine)} vs {len(base)}, {len(common)} in common)",
                    )
                )
            changed = sum(1 for doc in common if mine[doc] != base[doc])
            if changed:
                found.append(Mismatch(run.variant, task, f"other data for {changed} of {len(common)} samples"))
    return found
