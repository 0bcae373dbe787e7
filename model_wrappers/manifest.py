"""Entry point of the ``lmms_eval.models`` group: registers ``llava_futuremask`` and ``futuremask`` and makes our
tasks findable.

lmms-eval has no task entry point; it indexes its own ``lmms_eval/tasks/`` plus ``--include_path``. Its model
entry points, however, are loaded when ``lmms_eval.models`` is imported, which the CLI does before it builds its
``TaskManager``. So this entry point also appends our task folder (``tasks/``, shipped inside the package) to the
task manager's include paths: ``--tasks milebench`` then works with no flag, and ``--include_path`` keeps working.
It also lets the MileBench tasks know which kind of model (simple or chat) they are built for, lists our models
where ``lmms-eval models`` looks (as lmms-eval's own legacy plugin loader does), and teaches lmms-eval's response
cache (``--use_cache``) to give log-likelihood pairs back as pairs. Each patch checks what it wraps and steps aside
with a warning if a future lmms-eval changed it.
"""

from __future__ import annotations

import functools
import inspect
import logging

from lmms_futuremask.milebench.catalog import TASK_FOLDER

logger = logging.getLogger("lmms_futuremask")


def add_task_folder(task_manager_cls) -> bool:
    """Wrap ``TaskManager.initialize_tasks`` so our task folder is always indexed; True if installed."""
    original = task_manager_cls.initialize_tasks
    if getattr(original, "_futuremask_tasks", False):
        return True
    if list(inspect.signature(original).parameters)[:3] != ["self", "include_path", "include_defaults"]:
        logger.warning(
            "lmms-eval's TaskManager changed; pass --include_path %s to find the milebench tasks", TASK_FOLDER
        )
        return False

    @functools.wraps(original)
    def initialize_tasks(self, include_path=None, include_defaults=True):
        paths = [] if include_path is None else [include_path] if isinstance(include_path, str) else list(include_path)
        paths.append(str(TASK_FOLDER))
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


def _is_loglikelihood_pair(output: object) -> bool:
    return (
        isinstance(output, (list, tuple))
        and len(output) == 2
        and isinstance(output[0], (int, float))
        and not isinstance(output[0], bool)
        and isinstance(output[1], bool)
    )


def keep_loglikelihood_pairs(instance_module, evaluator_module=None) -> bool:
    """lmms-eval 0.7.3's response cache stores a ``(logprob, is_greedy)`` pair as a JSON list, and its
    ``unwrap_generation_output`` turns that list into a string on a cache hit, which breaks every multiple-choice
    task on the second ``--use_cache`` run. Wrap it so such a pair comes back as a tuple; True if installed."""
    original = instance_module.unwrap_generation_output
    if getattr(original, "_futuremask_pairs", False):
        return True
    if list(inspect.signature(original).parameters) != ["output"]:
        logger.warning("lmms-eval's unwrap_generation_output changed; --use_cache may not keep log-likelihoods")
        return False

    @functools.wraps(original)
    def unwrap_generation_output(output):
        if _is_loglikelihood_pair(output):
            return tuple(output), None
        return original(output)

    unwrap_generation_output._futuremask_pairs = True
    instance_module.unwrap_generation_output = unwrap_generation_output
    if evaluator_module is not None and getattr(evaluator_module, "unwrap_generation_output", None) is original:
        evaluator_module.unwrap_generation_output = unwrap_generation_output
    return True


#: Our models: lmms-eval name -> class path.
MODELS = {
    "llava_futuremask": "lmms_futuremask.model_wrappers.llava_futuremask.LlavaFutureMask",
    "futuremask": "lmms_futuremask.model_wrappers.futuremask.FutureMask",
}


def manifests():
    """What lmms-eval's ``lmms_eval.models`` entry point group loads (and where our patches are installed)."""
    import sys

    import lmms_eval.api.instance
    from lmms_eval.models.registry_v2 import ModelManifest
    from lmms_eval.tasks import TaskManager

    add_task_folder(TaskManager)
    record_task_type(TaskManager)
    keep_loglikelihood_pairs(lmms_eval.api.instance, sys.modules.get("lmms_eval.evaluator"))
    models = sys.modules.get("lmms_eval.models")  # being imported: its built-in tables exist already
    listed = getattr(models, "AVAILABLE_SIMPLE_MODELS", None)
    if isinstance(listed, dict):  # what `lmms-eval models` prints
        listed.update({name: path for name, path in MODELS.items() if name not in listed})
    return [ModelManifest(model_id=name, simple_class_path=path) for name, path in MODELS.items()]
