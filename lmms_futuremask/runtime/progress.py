"""How far a run is, for the process that started it: a multi-hour variant of a sweep is not silent.

The runner of an lmms-eval child writes a small JSON file (named by ``$LMMS_FUTUREMASK_PROGRESS``) after each batch;
the sweep reads it every so often and prints samples done / total, elapsed time and an ETA. Without the variable
nothing is written.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

PROGRESS_ENV = "LMMS_FUTUREMASK_PROGRESS"


@dataclass
class Progress:
    """One pass of the runner over a request type (lmms-eval sends all generation requests in one pass)."""

    kind: str  # "generate" or "loglikelihood"
    total: int  # requests to compute in this pass
    cached: int  # requests answered from the answer cache (not in total)
    done: int = 0
    started: float = 0.0  # time.time() at the pass's start
    updated: float = 0.0

    def describe(self, now: float | None = None) -> str:
        """``generate 120/480 samples (30 cached), 0:12:03 elapsed, ETA 0:36:09``."""
        now = time.time() if now is None else now
        elapsed = max(0.0, now - self.started)
        text = f"{self.kind} {self.done}/{self.total} samples"
        text += f" ({self.cached} cached)" if self.cached else ""
        text += f", {_clock(elapsed)} elapsed"
        if 0 < self.done < self.total:
            text += f", ETA {_clock(elapsed / self.done * (self.total - self.done))}"
        return text


def _clock(seconds: float) -> str:
    seconds = round(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class ProgressFile:
    """Writes :class:`Progress` atomically to ``$LMMS_FUTUREMASK_PROGRESS`` (if set) as a pass advances."""

    def __init__(self, kind: str, total: int, cached: int, path: str | None = None) -> None:
        self.path = Path(path) if path else (Path(os.environ[PROGRESS_ENV]) if os.environ.get(PROGRESS_ENV) else None)
        now = time.time()
        self.progress = Progress(kind, total, cached, 0, now, now)
        self._write()

    def advance(self, samples: int) -> None:
        """``samples`` more requests of the pass are answered."""
        self.progress.done += samples
        self.progress.updated = time.time()
        self._write()

    def _write(self) -> None:
        if self.path is None:
            return
        temporary = self.path.with_name(self.path.name + ".tmp")
        try:
            temporary.write_text(json.dumps(asdict(self.progress)))
            os.replace(temporary, self.path)
        except OSError:  # progress is a courtesy: never fail a run over it
            pass


def read_progress(path: str | Path) -> Progress | None:
    """The last progress written to ``path``, or None (none yet, or unreadable)."""
    try:
        return Progress(**json.loads(Path(path).read_text()))
    except (OSError, ValueError, TypeError):
        return None
