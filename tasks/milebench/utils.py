"""lmms-eval glue for the MileBench tasks: wires lmms_futuremask.milebench into lmms-eval's task API.

Data come from $MILEBENCH_DIR (default ~/.cache/lmms-futuremask/MileBench) in the official layout; see the README.
lmms-eval builds a task declared with ``class:`` as given, so :class:`MileBench` picks the class for the kind of
model the tasks are loaded for: a simple task (context and visuals) or a chat task (``doc_to_messages``).
"""

from datasets import Dataset, DatasetDict
from lmms_eval.api.task import ConfigurableMessagesTask, ConfigurableTask

from lmms_futuremask.milebench import task_hooks
from lmms_futuremask.milebench.catalog import BY_TASK_NAME
from lmms_futuremask.milebench.data import load_docs

doc_to_text = task_hooks.doc_to_text
doc_to_visual = task_hooks.doc_to_visual
doc_to_messages = task_hooks.doc_to_messages
process_results = task_hooks.process_results


class _MileBench:
    """A MileBench task read from the official folder; its metrics follow the task's question type."""

    def __init__(self, config=None):
        config = {k: v for k, v in (config or {}).items() if k != "class"}
        config["metric_list"] = task_hooks.metric_list(config["task"])
        super().__init__(config=config)

    def download(self, dataset_kwargs=None) -> None:  # noqa: ARG002 - lmms-eval's signature; the data is local
        docs = load_docs(BY_TASK_NAME[self.config.task].folder)
        self.dataset = DatasetDict({"test": Dataset.from_list(docs)})
        self.dataset_no_image = self.dataset


class MileBenchTask(_MileBench, ConfigurableTask):
    """For simple models (ours among them)."""


class MileBenchMessagesTask(_MileBench, ConfigurableMessagesTask):
    """For chat models: requests carry ``doc_to_messages``."""


class MileBench:
    """What the YAMLs' ``class:`` names: builds the task for the kind of model lmms-eval is loading tasks for."""

    def __new__(cls, config=None):  # noqa: D102 - the class docstring says it
        chat = task_hooks.TASK_TYPE.get() == "chat"
        return (MileBenchMessagesTask if chat else MileBenchTask)(config=config)

    def __init__(self, config=None):  # noqa: ARG002 - lmms-eval passes config= only where __init__ takes it
        raise AssertionError("MileBench builds a MileBenchTask or MileBenchMessagesTask instead")
