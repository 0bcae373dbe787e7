"""How a failure shows in results: the error answer's marker and the exceptions of the failure policy (a leaf)."""

from __future__ import annotations

#: Prefix of the answer recorded for a sample that failed under ``on_error="record"``: visible in logs and
#: sample files, and never an empty string that a scorer could take for a real answer.
ERROR_MARKER = "[futuremask-error]"


class SampleError(RuntimeError):
    """A sample failed under ``on_error="raise"``; the message names the sample."""


class RunFailed(RuntimeError):
    """The run produced nothing worth scoring: the model fails as a whole, or every sample failed.

    Raised instead of returning answers, so lmms-eval writes no results file that would look like a score.
    """


def is_error_answer(answer: object) -> bool:
    """True for the answer recorded in place of a failed sample."""
    return isinstance(answer, str) and answer.startswith(ERROR_MARKER)
