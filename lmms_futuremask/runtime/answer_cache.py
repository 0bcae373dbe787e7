"""A per-sample answer cache, written as each batch finishes, so an interrupted run loses no finished sample.

lmms-eval's own response cache stores a request type's responses only once the model has returned all of them, so
an interruption loses the whole pass. This cache appends one JSON line per answer and flushes it right away; a rerun
with the same folder and the same model settings takes the cached answers and computes only the rest.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any


def fingerprint(settings: dict[str, Any]) -> str:
    """A short stable hash of everything that changes answers (model, mode, merge, prompt and protocol knobs)."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def request_key(kind: str, task: str, doc_id: int, context: str, extra: Any) -> str:
    """One request: its type, task, doc, prompt text and generation settings (or scored continuation)."""
    payload = json.dumps([kind, task, doc_id, context, extra], sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()


class AnswerCache:
    """``<folder>/answers-<fingerprint>.jsonl``: one ``{"key", "answer"}`` line per finished request."""

    def __init__(self, folder: str | os.PathLike, settings: dict[str, Any], rank: int = 0) -> None:
        stem = f"answers-{fingerprint(settings)}"
        self.path = Path(folder) / f"{stem}-rank{rank}.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.answers: dict[str, Any] = {}
        for path in sorted(self.path.parent.glob(f"{stem}-rank*.jsonl")):  # any earlier world size
            for line in path.read_text().splitlines():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut short by the interruption
                self.answers[record["key"]] = record["answer"]
        self.reused = 0
        self.computed = 0

    def get(self, key: str) -> Any | None:
        if key in self.answers:
            self.reused += 1
            return self.answers[key]
        return None

    def put(self, key: str, answer: Any) -> None:
        self.answers[key] = answer
        self.computed += 1
        with self.path.open("a") as handle:
            handle.write(json.dumps({"key": key, "answer": answer}) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def summary(self) -> str:
        return f"answer cache {self.path}: {self.reused} reused, {self.computed} computed"
