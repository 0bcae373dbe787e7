"""A per-sample answer cache, written as each batch finishes, so an interrupted run loses no finished sample.

lmms-eval's own response cache stores a request type's responses only once the model has returned all of them, so
an interruption loses the whole pass. This cache appends one JSON line per answer and flushes it right away; a rerun
with the same folder takes the cached answers and computes only the rest.

An answer is reused only when everything that determines it is unchanged: the file name carries a fingerprint of the
settings and of the checkpoint's identity (:func:`lmms_futuremask.runtime.fingerprint.checkpoint_identity`), and each
key carries the request (task, doc, prompt, generation settings) and the identity of its data. Error answers are
never stored, so a failed sample is computed again on the next run.

A power cut or a full disk can leave the last line cut short or garbled: such a line is skipped with a warning that
names the file and line, and the next append starts on a fresh line, so no acknowledged answer is ever lost.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from .fingerprint import digest

logger = logging.getLogger("lmms_futuremask")


def request_key(kind: str, task: str, doc_id: int, context: str, extra: Any, data: Any = None) -> str:
    """One request: its type, task, doc, prompt text, generation settings (or scored continuation) and the
    identity of its data (files and dataset fingerprints; None where there is none)."""
    return digest([kind, task, doc_id, context, extra, data], length=64)


def _read_records(path: Path) -> list[tuple[str, Any]]:
    """``(key, answer)`` of every intact line; damaged lines are reported and skipped."""
    records = []
    for number, raw in enumerate(path.read_bytes().split(b"\n"), 1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw.decode("utf-8"))
            records.append((record["key"], record["answer"]))
        except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as error:
            logger.warning(
                "answer cache %s line %d is damaged (%s); skipped, its sample will be recomputed",
                path,
                number,
                type(error).__name__,
            )
    return records


class AnswerCache:
    """``<folder>/answers-<fingerprint>-rank<r>.jsonl``: one ``{"key", "answer"}`` line per finished request."""

    def __init__(self, folder: str | os.PathLike, settings: dict[str, Any], rank: int = 0) -> None:
        stem = f"answers-{digest(settings)}"
        self.path = Path(folder) / f"{stem}-rank{rank}.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.answers: dict[str, Any] = {}
        for path in sorted(self.path.parent.glob(f"{stem}-rank*.jsonl")):  # any earlier world size
            self.answers.update(_read_records(path))
        self.reused = 0
        self.computed = 0

    def get(self, key: str) -> Any | None:
        """The cached answer of ``key`` (counted as reused), or None."""
        if key in self.answers:
            self.reused += 1
            return self.answers[key]
        return None

    def put(self, key: str, answer: Any) -> None:
        """Append one answer and make it durable before returning (flush + fsync), on a line of its own."""
        self.answers[key] = answer
        self.computed += 1
        line = json.dumps({"key": key, "answer": answer}) + "\n"
        with self.path.open("ab+") as handle:
            handle.seek(0, os.SEEK_END)
            if handle.tell() > 0:
                handle.seek(-1, os.SEEK_END)
                if handle.read(1) != b"\n":  # a line cut short by an earlier interruption: start a fresh one
                    handle.write(b"\n")
            handle.write(line.encode("utf-8"))
            handle.flush()
            os.fsync(handle.fileno())

    def summary(self) -> str:
        """``answer cache <file>: N reused, M computed`` (what the sweep test and users read in the log)."""
        return f"answer cache {self.path}: {self.reused} reused, {self.computed} computed"
