"""lmms-eval's own flags through the real CLI: ``--use_cache`` on multiple-choice and generation tasks,
``--gen_kwargs`` honoured (checked against the stock model's ``generate``) or refused, ``--apply_chat_template`` and
``--batch_size auto`` refused before the model loads, and ``--log_samples`` showing the prompt the model was fed,
``--system_instruction`` included."""

import json
import math
import os

import pytest
import torch
from PIL import Image

from lmms_futuremask.experiments.evalrun import OFFLINE_ENV, find_results_file, read_samples
from lmms_futuremask.experiments.evalrun import sample_files as samples_of
from lmms_futuremask.milebench.data import load_docs
from lmms_futuremask.milebench.fake import write_fake_milebench
from lmms_futuremask.milebench.prompt import full_prompt
from lmms_futuremask.testing.sample_task import GROUP_NAME, write_sample_task

from ..helpers import lmms_eval_cli

ENV = {**os.environ, **OFFLINE_ENV}
SYSTEM = "Answer in one word. "


def lmms_eval(tmp_path, model_args, tasks, *flags, data=None):
    """One real lmms-eval run of ``llava_futuremask``; (completed process, output folder)."""
    out = tmp_path / "out"
    return lmms_eval_cli(out, "llava_futuremask", model_args, tasks, *flags, data=data), out


@pytest.fixture(scope="module")
def sample_tasks(tmp_path_factory):
    return write_sample_task(tmp_path_factory.mktemp("tasks"), n_docs=4)


@pytest.fixture(scope="module")
def milebench(tmp_path_factory):
    return write_fake_milebench(tmp_path_factory.mktemp("mb"), samples_per_task=2)


# -- --use_cache ------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_use_cache_second_run_reuses_every_answer_with_the_same_scores(tmp_path, tiny_model_dir, sample_tasks):
    flags = ["--include_path", str(sample_tasks), "--use_cache", str(tmp_path / "cache"), "--log_samples"]
    args = f"pretrained={tiny_model_dir},device=cpu,mode=future"
    scores = []
    for attempt in ("first", "second"):
        done, out = lmms_eval(tmp_path / attempt, args, GROUP_NAME, *flags)
        results = find_results_file(out)  # raises if the run wrote none
        scores.append(json.loads(results.read_text())["results"])
        log = done.stdout + done.stderr
    # 4 docs x 4 choices (loglikelihood) and 4 generations, all from the cache on the second run
    assert "16/16 cache hits" in log and "4/4 cache hits" in log, log[-3000:]
    assert "too many values to unpack" not in log
    for task in ("futuremask_sample_choice", "futuremask_sample_colour"):
        first, second = scores[0][task], scores[1][task]
        metric = "acc,none" if task.endswith("choice") else "exact_match,none"
        assert math.isfinite(second[metric]) and second[metric] == first[metric], task


# -- refused before the model loads -----------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    "flags, message",
    [
        (["--apply_chat_template"], "--apply_chat_template is not for llava_futuremask"),
        (["--batch_size", "auto"], "batch_size=auto is not supported"),
    ],
)
def test_unsupported_flags_are_refused_before_loading_and_write_no_results(
    tmp_path, tiny_model_dir, sample_tasks, flags, message
):
    args = f"pretrained={tiny_model_dir},device=cpu"
    done, out = lmms_eval(tmp_path, args, GROUP_NAME, "--include_path", str(sample_tasks), *flags)
    log = done.stdout + done.stderr
    assert message in log, log[-3000:]
    assert "llava_futuremask: " + str(tiny_model_dir) not in log  # the adapter's after-load line never came
    assert not list(out.rglob("*_results.json"))


# -- honoured generation settings, the fed prompt and the system instruction in the log ------------------------------


@pytest.fixture(scope="module")
def flagged_run(tmp_path_factory, tiny_model_dir, sample_tasks, milebench):
    """Beam search with a repetition penalty, a system instruction, a MileBench budget that truncates."""
    tmp_path = tmp_path_factory.mktemp("flags")
    args = f"pretrained={tiny_model_dir},device=cpu,milebench_context_len=60"
    done, out = lmms_eval(
        tmp_path,
        args,
        "futuremask_sample_colour,milebench_clevr_change",
        *["--include_path", str(sample_tasks), "--log_samples", "--limit", "2"],
        *["--gen_kwargs", "num_beams=3,repetition_penalty=3.0", "--system_instruction", SYSTEM],
        data=milebench,
    )
    files = samples_of(find_results_file(out))
    return {task: read_samples(path) for task, path in files.items()}, done


def stock_answer(model, processor, prompt, images, **settings):
    inputs = processor(text=prompt, images=images, return_tensors="pt")
    with torch.inference_mode():
        output = model.generate(**inputs, max_new_tokens=8, do_sample=False, **settings)
    text = processor.tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    return text.split("\n")[0]


@pytest.mark.slow
def test_generation_settings_from_gen_kwargs_reach_generate(flagged_run, tiny_model_dir, sample_tasks):
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    records, _ = flagged_run
    model = LlavaForConditionalGeneration.from_pretrained(tiny_model_dir).eval()
    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    docs = [json.loads(line) for line in (sample_tasks / GROUP_NAME / "data" / "docs.jsonl").read_text().splitlines()]
    differs = False
    for record in records["futuremask_sample_colour"]:
        doc = docs[record["doc_id"]]
        images = [Image.open(sample_tasks / GROUP_NAME / "data" / name).convert("RGB") for name in doc["images"]]
        assert record["input"].count("<image>") == len(images) and SYSTEM in record["input"]
        beams = stock_answer(model, processor, record["input"], images, num_beams=3, repetition_penalty=3.0)
        answer = record["filtered_resps"]
        assert (answer if isinstance(answer, str) else answer[0]) == beams, record["doc_id"]
        differs |= stock_answer(model, processor, record["input"], images) != beams
    assert differs, "greedy decoding gives the same answers: the check could not tell the settings were used"


@pytest.mark.slow
def test_log_shows_the_truncated_prompt_fed_with_the_system_instruction(flagged_run, tiny_model_dir, milebench):
    from lmms_eval.models import get_model

    from ..helpers import protocol_sample

    records, _ = flagged_run
    model = get_model("llava_futuremask").create_from_arg_string(
        f"pretrained={tiny_model_dir},device=cpu,milebench_context_len=60", {}
    )
    docs = load_docs("CLEVR-Change", milebench)
    model.task_dict = {"milebench_clevr_change": {"test": docs}}
    for record in records["milebench_clevr_change"]:
        doc = docs[record["doc_id"]]
        logged = record["input"]
        assert SYSTEM + doc["instruction"] in logged  # before the task's own instruction, inside the prompt
        assert logged.startswith("[INST] <<SYS>>")  # the template the paper's pipeline applies
        fed = protocol_sample(model, "milebench_clevr_change", record["doc_id"], system=SYSTEM)
        assert logged.count("<image>") == len(fed.images) < len(doc["images"])  # truncated: not the full prompt
        assert full_prompt(doc) not in logged
        assert record["token_counts"][0]["input_tokens"] == len(fed.input_ids)


def test_a_changed_milebench_context_other_than_a_system_instruction_is_refused(tiny_model_dir, milebench):
    from lmms_eval.api.instance import Instance
    from lmms_eval.models import get_model

    model = get_model("llava_futuremask").create_from_arg_string(f"pretrained={tiny_model_dir},device=cpu", {})
    docs = load_docs("TQA", milebench)
    model.task_dict = {"milebench_tqa": {"test": docs}}
    context = full_prompt(docs[0]) + " Think step by step."
    args = (context, {"max_new_tokens": 2}, None, 0, "milebench_tqa", "test")
    instance = Instance("generate_until", args, idx=0, metadata={"task": "milebench_tqa", "doc_id": 0, "repeats": 1})
    with pytest.raises(ValueError, match="only --system_instruction"):
        model._request(instance, "generate").load()


def test_a_system_instruction_is_a_system_turn_for_chat_models(tmp_path, milebench):
    from lmms_eval.api.instance import Instance
    from lmms_eval.models import get_model

    from lmms_futuremask.testing.vlms import write_tiny_vlm

    path = write_tiny_vlm("qwen2_5_vl", tmp_path / "qwen")
    model = get_model("futuremask").create_from_arg_string(f"pretrained={path},device=cpu", {})
    docs = load_docs("TQA", milebench)
    model.task_dict = {"milebench_tqa": {"test": docs}}
    args = (SYSTEM + full_prompt(docs[0]), {"max_new_tokens": 2}, None, 0, "milebench_tqa", "test")
    instance = Instance("generate_until", args, idx=0, metadata={"task": "milebench_tqa", "doc_id": 0, "repeats": 1})
    sample = model._request(instance, "generate").load()[0]
    prompt = model.vlm.prompt(sample)
    assert prompt.startswith(f"<|im_start|>system\n{SYSTEM}<|im_end|>")
    assert SYSTEM not in prompt[len(f"<|im_start|>system\n{SYSTEM}<|im_end|>") :]  # only in the system turn
