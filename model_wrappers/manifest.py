"""Entry point of the ``lmms_eval.models`` group: registers ``llava_futuremask`` and ``futuremask`` and makes our
tasks findable.

lmms-eval has no task entry point; it indexes its own ``lmms_eval/tasks/`` plus ``--include_path``. Its model
entry points, however, are loaded when ``lmms_eval.models`` is imported, which the CLI does before it builds its
``TaskManager``. So this entry point also appends our task folder (``tasks/``, shipped inside the package) to the
task manager's include paths: ``--tasks milebench`` then works with no flag, and ``--include_path`` keeps working.
If a future lmms-eval changes that method, the hook steps aside with a warning and ``--include_path`` is the route.
"""

from __future__ import annotations

import functools
import inspect
import logging
from pathlib import Path

import lmms_futuremask

TASKS_DIR = Path(lmms_futuremask.__file__).resolve().parent / "tasks"
logger = logging.getLogger("lmms_futuremask")


def add_task_folder(task_manager_cls) -> bool:
    """Wrap ``TaskManager.initialize_tasks`` so our task folder is always indexed; True if installed."""
    original = task_manager_cls.initialize_tasks
    if getattr(original, "_futuremask_tasks", False):
        return True
    if list(inspect.signature(original).parameters)[:3] != ["self", "include_path", "include_defaults"]:
        logger.warning("lmms-eval's TaskManager changed; pass --include_path %s to find the milebench tasks", TASKS_DIR)
        return False

    @functools.wraps(original)
    def initialize_tasks(self, include_path=None, include_defaults=True):
        paths = [] if include_path is None else [include_path] if isinstance(include_path, str) else list(include_path)
        paths.append(str(TASKS_DIR))
        return original(self, include_path=paths, include_defaults=include_defaults)

    initialize_tasks._futuremask_tasks = True
    task_manager_cls.initialize_tasks = initialize_tasks
    return True


def record_task_type(task_manager_cls) -> bool:
    """Wrap ``TaskManager.load_task_or_group`` so our tasks know whether they are built for a simple or a chat model
    (lmms-eval builds a ``class:`` task as given, never as its chat task class); True if installed."""
    from lmms_futuremask.milebench.task_hooks import TASK_TYPE

    original = task_manager_cls.load_task_or_group
    if getattr(original, "_futuremask_tasks", False):
        return True
    if list(inspect.signature(original).parameters)[:3] != ["self", "task_list", "task_type"]:
        logger.warning("lmms-eval's TaskManager changed; MileBench tasks are built for simple models only")
        return False

    @functools.wraps(original)
    def load_task_or_group(self, task_list=None, task_type="simple"):
        token = TASK_TYPE.set(task_type)
        try:
            return original(self, task_list, task_type)
        finally:
            TASK_TYPE.reset(token)

    load_task_or_group._futuremask_tasks = True
    task_manager_cls.load_task_or_group = load_task_or_group
    return True


def manifests():
    from lmms_eval.models.registry_v2 import ModelManifest
    from lmms_eval.tasks import TaskManager

    add_task_folder(TaskManager)
    record_task_type(TaskManager)
    return [
        ModelManifest(model_id="llava_futuremask", simple_class_path="model_wrappers.llava_futuremask.LlavaFutureMask"),
        ModelManifest(model_id="futuremask", simple_class_path="model_wrappers.futuremask.FutureMask"),
    ]
