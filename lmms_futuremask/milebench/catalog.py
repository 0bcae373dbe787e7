"""The 29 MileBench tasks: folder names as the official release spells them, categories, our task names."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..validation import check_choice

#: The folder of our lmms-eval task YAMLs (``milebench/`` inside), shipped in the package; what
#: ``--include_path`` / ``lmms-eval tasks list --include-path`` take.
TASK_FOLDER = Path(__file__).resolve().parents[1] / "tasks"


@dataclass(frozen=True)
class MileTask:
    """One MileBench task: its official folder, our name and its category."""

    folder: str  # the official folder and JSON name, e.g. "CLEVR-Change"
    name: str  # our snake_case name, used as lmms-eval task "milebench_<name>"
    category: str  # "temporal", "semantic" or "diagnostic"

    @property
    def task_name(self) -> str:
        """The lmms-eval task name, ``milebench_<name>``."""
        return f"milebench_{self.name}"


_TABLE = [
    ("ActionLocalization", "action_localization", "temporal"),
    ("ActionPrediction", "action_prediction", "temporal"),
    ("ActionSequence", "action_sequence", "temporal"),
    ("CharacterOrder", "character_order", "temporal"),
    ("CounterfactualInference", "counterfactual_inference", "temporal"),
    ("EgocentricNavigation", "egocentric_navigation", "temporal"),
    ("MovingAttribute", "moving_attribute", "temporal"),
    ("MovingDirection", "moving_direction", "temporal"),
    ("ObjectExistence", "object_existence", "temporal"),
    ("ObjectInteraction", "object_interaction", "temporal"),
    ("ObjectShuffle", "object_shuffle", "temporal"),
    ("SceneTransition", "scene_transition", "temporal"),
    ("StateChange", "state_change", "temporal"),
    ("ALFRED", "alfred", "semantic"),
    ("CLEVR-Change", "clevr_change", "semantic"),
    ("DocVQA", "doc_vqa", "semantic"),
    ("IEdit", "iedit", "semantic"),
    ("MMCoQA", "mmcoqa", "semantic"),
    ("MultiModalQA", "multi_modal_qa", "semantic"),
    ("nuscenes", "nuscenes", "semantic"),
    ("OCR-VQA", "ocr_vqa", "semantic"),
    ("SlideVQA", "slide_vqa", "semantic"),
    ("Spot-the-Diff", "spot_the_diff", "semantic"),
    ("TQA", "tqa", "semantic"),
    ("WebQA", "web_qa", "semantic"),
    ("WikiVQA", "wiki_vqa", "semantic"),
    ("TextNeedleInAHaystack", "text_needle_in_a_haystack", "diagnostic"),
    ("ImageNeedleInAHaystack", "image_needle_in_a_haystack", "diagnostic"),
    ("GPR1200", "gpr1200", "diagnostic"),
]

TASKS: tuple[MileTask, ...] = tuple(MileTask(*row) for row in _TABLE)
BY_FOLDER: dict[str, MileTask] = {t.folder: t for t in TASKS}
BY_TASK_NAME: dict[str, MileTask] = {t.task_name: t for t in TASKS}


def short_name(task: str) -> str:
    """A MileBench task's folder name (its name in the paper's tables); any other task's name as it is."""
    return BY_TASK_NAME[task].folder if task in BY_TASK_NAME else task


#: The 13 tasks of the paper's Table 4 (``lmms_futuremask/data/paper_table4_llava15.csv``), in its column order.
PAPER_FOLDERS = (
    "ActionLocalization",
    "ActionPrediction",
    "ActionSequence",
    "CLEVR-Change",
    "CharacterOrder",
    "DocVQA",
    "EgocentricNavigation",
    "MovingAttribute",
    "OCR-VQA",
    "ObjectExistence",
    "Spot-the-Diff",
    "StateChange",
    "TQA",
)

#: lmms-eval group name -> its tasks.
GROUPS: dict[str, tuple[MileTask, ...]] = {
    "milebench": TASKS,
    "milebench_temporal": tuple(t for t in TASKS if t.category == "temporal"),
    "milebench_semantic": tuple(t for t in TASKS if t.category == "semantic"),
    "milebench_diagnostic": tuple(t for t in TASKS if t.category == "diagnostic"),
    "milebench_paper": tuple(BY_FOLDER[f] for f in PAPER_FOLDERS),
}


def task_by_folder(folder: str) -> MileTask:
    """The task of an official folder name (``CLEVR-Change``); an unknown name raises naming the valid ones."""
    return BY_FOLDER[check_choice("MileBench task", folder, BY_FOLDER, noun="tasks")]
