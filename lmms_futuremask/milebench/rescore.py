"""Re-score saved ``--log_samples`` outputs offline with the official scorer, without running a model."""

from __future__ import annotations

import json
import re
from pathlib import Path

from .catalog import BY_TASK_NAME, GROUPS
from .data import MileBenchDataError, data_dir, load_docs
from .task_hooks import summarize

_SAMPLES_FILE = re.compile(r"_samples_(milebench_[a-z0-9_]+)\.jsonl$")


def _prediction(record: dict) -> str:
    response = record.get("filtered_resps", record.get("resps"))
    while isinstance(response, list):
        response = response[0] if response else ""
    return str(response)


def find_sample_files(log_dir: str | Path) -> dict[str, Path]:
    """task name -> its newest samples file under ``log_dir``."""
    files: dict[str, Path] = {}
    for path in sorted(Path(log_dir).rglob("*_samples_milebench_*.jsonl"), key=lambda p: p.stat().st_mtime):
        match = _SAMPLES_FILE.search(path.name)
        if match and match.group(1) in BY_TASK_NAME:
            files[match.group(1)] = path
    return files


def check_against_data(path: Path, records: list[dict], docs: list[dict], root: Path) -> None:
    """The saved samples must be the data's: every doc id in range and every saved target the data's answer."""
    problems = []
    for record in records:
        doc_id = record.get("doc_id")
        if not isinstance(doc_id, int) or not 0 <= doc_id < len(docs):
            problems.append(f"doc {doc_id} is not one of its {len(docs)} samples")
        elif "target" in record and str(record["target"]) != docs[doc_id]["answer"]:
            problems.append(
                f"doc {doc_id}'s saved target {record['target']!r} is not the data's {docs[doc_id]['answer']!r}"
            )
    if problems:
        raise MileBenchDataError(
            f"{path} does not match the MileBench data in {root}: {len(problems)} sample(s) differ, e.g. "
            f"{'; '.join(problems[:3])}. Rescore against the data the run used (--data-dir)."
        )


def rescore_logs(log_dir: str | Path, root: str | Path | None = None) -> dict[str, dict[str, float]]:
    """Task (and complete group) -> metrics, re-computed from the saved answers and the MileBench data."""
    files = find_sample_files(log_dir)
    if not files:
        raise FileNotFoundError(f"no *_samples_milebench_*.jsonl under {log_dir}; run lmms-eval with --log_samples")
    table: dict[str, dict[str, float]] = {}
    for task_name, path in sorted(files.items()):
        docs = load_docs(BY_TASK_NAME[task_name].folder, root)
        records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        check_against_data(path, records, docs, data_dir(root))
        table[task_name] = summarize([docs[r["doc_id"]] for r in records], [_prediction(r) for r in records])
    for group, tasks in GROUPS.items():
        if all(t.task_name in table for t in tasks):
            scores = [table[t.task_name]["score"] for t in tasks]
            table[group] = {"score": sum(scores) / len(scores)}
    return table


def format_rescore_table(table: dict[str, dict[str, float]]) -> str:
    """The re-scored metrics as a markdown table (per task: value, per image-quantity level, samples, failed)."""
    lines = ["| task | metric | value | Few | Medium | Many | samples | failed |", "|---|---|---|---|---|---|---|---|"]
    for name, metrics in table.items():
        if name in GROUPS:
            lines.append(f"| {name} (group mean) | score | {metrics['score']:.4f} | | | | | |")
            continue
        metric = next(k for k in metrics if k in ("accuracy", "rouge_l_f"))
        levels = " | ".join(f"{metrics[f'{metric}_{lvl}']:.4f}" for lvl in ("few", "medium", "many"))
        lines.append(
            f"| {BY_TASK_NAME[name].folder} | {metric} | {metrics[metric]:.4f} | {levels} | "
            f"{int(metrics['samples'])} | {int(metrics['failed_samples'])} |"
        )
    return "\n".join(lines)
