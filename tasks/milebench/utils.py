"""lmms-eval glue for the MileBench tasks: wires lmms_futuremask.milebench into lmms-eval's task API.

Data come from $MILEBENCH_DIR (default ~/.cache/lmms-futuremask/MileBench) in the official layout; see the README.
"""

from datasets import Dataset, DatasetDict
from lmms_eval.api.task import ConfigurableTask

from lmms_futuremask.milebench import task_hooks
from lmms_futuremask.milebench.catalog import BY_TASK_NAME
from lmms_futuremask.milebench.data import load_docs

doc_to_text = task_hooks.doc_to_text
doc_to_visual = task_hooks.doc_to_visual
process_results = task_hooks.process_results


class MileBenchTask(ConfigurableTask):
    """A MileBench task read from the official folder; its metrics follow the task's question type."""

    def __init__(self, config=None):
        config = {k: v for k, v in (config or {}).items() if k != "class"}
        config["metric_list"] = task_hooks.metric_list(config["task"])
        super().__init__(config=config)

    def download(self, dataset_kwargs=None) -> None:
        docs = load_docs(BY_TASK_NAME[self.config.task].folder)
        self.dataset = DatasetDict({"test": Dataset.from_list(docs)})
        self.dataset_no_image = self.dataset
