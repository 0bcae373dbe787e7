"""``--model futuremask``: any VLM family through lmms-eval, prompts in the model's own format, correct
log-likelihoods (multimodal RoPE included), MileBench with each image's real token count, and MileBench for
lmms-eval's own chat models."""

import json
import math
import os

import pytest
import torch
from PIL import Image

from lmms_futuremask.experiments.evalrun import (
    OFFLINE_ENV,
    find_results_file,
    read_samples,
    sample_files,
)
from lmms_futuremask.milebench.data import load_docs
from lmms_futuremask.milebench.fake import write_fake_milebench
from lmms_futuremask.runtime.errors import ERROR_MARKER
from lmms_futuremask.runtime.vlm import VLM, Sample
from lmms_futuremask.testing.sample_task import GROUP_NAME, write_sample_task
from lmms_futuremask.testing.vlms import sample_images, write_tiny_vlm

from ..helpers import lmms_eval_cli

ENV = {**os.environ, **OFFLINE_ENV}

#: family -> what its own prompt format shows around an image (proof the processor's template was used)
FORMATS = {
    "llava_next": "[INST] <image>",
    "qwen2_5_vl": "<|vision_start|><|image_pad|><|vision_end|>",
    "idefics3": "<image>",
    "gemma3": "<start_of_image>",
}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("vlms")
    return {name: write_tiny_vlm(name, root / name) for name in [*FORMATS, "qwen2_vl"]}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_fake_milebench(tmp_path_factory.mktemp("mb"), samples_per_task=2)


def vlm(path, mode="original"):
    return VLM.from_pretrained(str(path), mode=mode, device="cpu", conv_template="chat")


# -- the real CLI, per family -----------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("name", list(FORMATS))
def test_lmms_eval_cli_runs_each_family_in_its_own_prompt_format(tmp_path, checkpoints, data, name):
    tasks = write_sample_task(tmp_path / "tasks", n_docs=3)
    out = tmp_path / "out"
    args = f"pretrained={checkpoints[name]},mode=future_v2v,device=cpu,max_new_tokens=3,batch_size=2"
    tasks_arg = f"{GROUP_NAME},milebench_tqa,milebench_clevr_change"
    done = lmms_eval_cli(out, "futuremask", args, tasks_arg, "--include_path", str(tasks), "--log_samples", data=data)
    results = find_results_file(out)  # raises with no results file
    scores = json.loads(results.read_text())["results"]
    assert math.isfinite(scores["futuremask_sample_choice"]["acc,none"]), done.stderr[-2000:]
    assert scores["milebench_tqa"]["failed_samples,none"] == 0
    for task, path in sample_files(results).items():
        for record in read_samples(path):
            answer = record["filtered_resps"]
            answer = answer[0] if isinstance(answer, list) else answer
            assert not str(answer).startswith(ERROR_MARKER), (task, answer)
            if task != "futuremask_sample_choice":  # generation: the logged input is the prompt the model saw
                assert FORMATS[name] in record["input"], (task, record["input"][:300])
                assert record["token_counts"][0]["input_tokens"] > 0


# -- log-likelihood --------------------------------------------------------------------------------------------------


def stock_logprob(model_vlm, sample, continuation):
    """The model scoring prompt + continuation in one causal forward (the stock way)."""
    prompt = model_vlm.prompt(sample)
    tokens = model_vlm.continuation_tokens(prompt, continuation)
    whole = model_vlm.processor(text=[prompt + continuation], images=[sample.images], return_tensors="pt")
    whole = {k: v.float() if v.is_floating_point() else v for k, v in whole.items()}
    assert whole["input_ids"][0, -len(tokens) :].tolist() == tokens
    with torch.inference_mode():
        logprobs = torch.log_softmax(model_vlm.model(**whole).logits.float(), -1)[0]
    length = whole["input_ids"].shape[1]
    return sum(float(logprobs[length - len(tokens) - 1 + t, tokens[t]]) for t in range(len(tokens)))


def teacher_forced(model_vlm, sample, continuation):
    """Prefill the prompt (under the mode), then one stock decode step per continuation token."""
    inputs = model_vlm.inputs([sample])
    tokens = model_vlm.continuation_tokens(model_vlm.prompt(sample), continuation)
    total = 0.0
    with torch.inference_mode():
        out = model_vlm.model(**inputs, use_cache=True)
        for token in tokens:
            total += float(torch.log_softmax(out.logits[0, -1].float(), -1)[token])
            out = model_vlm.model(
                input_ids=torch.tensor([[token]]), past_key_values=out.past_key_values, use_cache=True
            )
    return total


@pytest.mark.parametrize("name", ["qwen2_vl", "llava_next"])
def test_loglikelihood_equals_the_models_own_scoring(checkpoints, name):
    model_vlm = vlm(checkpoints[name])
    sample = Sample("Which image is brighter? Answer with one word.", sample_images(2, 48), "doc")
    (got,) = model_vlm.score_batch([sample], [" the first one"])
    assert got.logprob == pytest.approx(stock_logprob(model_vlm, sample, " the first one"), abs=1e-4)


@pytest.mark.parametrize("name", ["qwen2_vl", "llava_next"])
def test_loglikelihood_under_a_mode_equals_teacher_forced_decode_steps(checkpoints, name):
    model_vlm = vlm(checkpoints[name], mode="future")
    sample = Sample("Which image is brighter? Answer with one word.", sample_images(2, 48), "doc")
    (got,) = model_vlm.score_batch([sample], [" the first one"])
    assert got.logprob == pytest.approx(teacher_forced(model_vlm, sample, " the first one"), abs=1e-4)
    assert got.logprob != pytest.approx(stock_logprob(vlm(checkpoints[name]), sample, " the first one"), abs=1e-3)


def test_left_padded_loglikelihood_batch_equals_one_at_a_time(checkpoints):
    model_vlm = vlm(checkpoints["qwen2_vl"], mode="future_v2v")
    samples = [Sample("Compare them.", sample_images(2, 48), "a"), Sample("What is it?", sample_images(1, 40), "b")]
    continuations = [" the first one is brighter", " a dog"]
    batched = model_vlm.score_batch(samples, continuations)
    for sample, continuation, score in zip(samples, continuations, batched, strict=True):
        assert score.logprob == pytest.approx(model_vlm.score_batch([sample], [continuation])[0].logprob, abs=1e-4)


# -- MileBench with each image's real token count ----------------------------------------------------------------------


def test_milebench_truncation_counts_each_images_own_tokens(checkpoints, tmp_path):
    """Qwen2.5-VL gives a bigger image more tokens: the budget keeps exactly the images whose real costs fit."""
    from lmms_futuremask.milebench.chat import ChatProtocol

    model_vlm = vlm(checkpoints["qwen2_5_vl"])
    data = write_fake_milebench(tmp_path / "mb", samples_per_task=1)
    doc = load_docs("TQA", data)[0]
    doc = dict(doc, context="{image#1} a {image#2} b", has_choices=False, choices=[])
    for index, size in enumerate([(64, 64), (32, 32)]):  # image 1 is big, image 2 small
        Image.new("RGB", size, (90, 20 + index, 30)).save(data / "TQA" / "images" / doc["images"][index])
    grid = model_vlm.processor.image_processor.merge_size**2

    def tokens_of(size):  # the processor's own count: grid cells / merge, plus <|vision_start|>, <|vision_end|>
        out = model_vlm.processor(text=["<|image_pad|>"], images=[Image.new("RGB", size)], return_tensors="pt")
        return int(out["image_grid_thw"][0].prod()) // grid + 2

    big, small = tokens_of((64, 64)), tokens_of((32, 32))
    assert big > small
    protocol = ChatProtocol.for_vlm(model_vlm)
    assert protocol.image_tokens(doc) == [big, small]
    text_tokens = len(protocol.codec.encode(doc["instruction"])) + len(protocol.codec.encode(" b"))
    text_tokens += len(protocol.codec.encode(" a "))
    fits_small_only = text_tokens + small + big - 1  # one token short of both images
    protocol.max_context_len = fits_small_only
    sample = protocol.sample(doc, "doc")
    assert len(sample.images) == 1 and sample.images[0].size == (32, 32)
    protocol.max_context_len = fits_small_only + 1
    assert len(protocol.sample(doc, "doc").images) == 2
    prompt = model_vlm.prompt(protocol.sample(doc, "doc"))
    assert prompt.count("<|vision_start|><|image_pad|><|vision_end|>") == 2 and "<|im_start|>assistant" in prompt


# -- MileBench for lmms-eval's own models ------------------------------------------------------------------------


def test_doc_to_messages_gives_the_official_prompt_with_images_in_place(data):
    from lmms_futuremask.milebench.prompt import full_prompt
    from lmms_futuremask.milebench.task_hooks import doc_to_messages

    doc = load_docs("CLEVR-Change", data)[0]
    (turn,) = doc_to_messages(doc)
    kinds = [part["type"] for part in turn["content"]]
    assert kinds[:2] == ["text", "image"] and kinds.count("image") == len(doc["images"])
    text = "".join(p["text"] if p["type"] == "text" else "<image>" for p in turn["content"])
    assert text == full_prompt(doc)
    assert all(isinstance(p["url"], Image.Image) for p in turn["content"] if p["type"] == "image")


@pytest.mark.slow
def test_a_stock_lmms_eval_chat_model_runs_milebench(tmp_path, checkpoints, data):
    pytest.importorskip("decord", reason="lmms-eval's qwen3_vl model imports decord")
    path = write_tiny_vlm("qwen3_vl", tmp_path / "qwen3_vl")
    out = tmp_path / "out"
    args = f"pretrained={path},device_map=cpu"
    flags = ("--device", "cpu", "--limit", "2", "--gen_kwargs", "max_new_tokens=3", "--log_samples")
    done = lmms_eval_cli(out, "qwen3_vl", args, "milebench_tqa", *flags, data=data)
    assert "'function' object has no attribute 'items'" not in done.stderr
    results = find_results_file(out)
    records = read_samples(sample_files(results)["milebench_tqa"])
    # Answered: the model's processor accepted the turn's images (it raises when they do not match its slots).
    assert len(records) == 2 and all("<image>" in r["input"] and r["filtered_resps"] for r in records)


# -- original is the stock model --------------------------------------------------------------------------------------


def test_original_through_futuremask_gives_the_stock_models_greedy_answers(checkpoints):
    from lmms_eval.api.instance import Instance
    from lmms_eval.models import get_model

    from ..helpers import texts

    path = checkpoints["qwen2_5_vl"]
    adapter = get_model("futuremask").create_from_arg_string(f"pretrained={path},device=cpu,batch_size=2", {})
    docs = [{"q": "Which is brighter? <image> or <image>", "n": 2}, {"q": "What colour is it?", "n": 1}]
    adapter.task_dict = {"toy": {"test": docs}}
    gen = {"max_new_tokens": 5, "until": []}
    requests = [
        Instance(
            "generate_until",
            (d["q"], dict(gen), lambda doc: sample_images(doc["n"], 48), i, "toy", "test"),
            idx=0,
            metadata={"task": "toy", "doc_id": i, "repeats": 1},
        )
        for i, d in enumerate(docs)
    ]
    answers = texts(adapter.generate_until(requests))
    stock = vlm(path)  # original: nothing installed
    from lmms_futuremask.attention.integration import disable

    disable(stock.model)
    for doc, answer in zip(docs, answers, strict=True):
        sample = Sample(doc["q"], sample_images(doc["n"], 48), "doc")
        inputs = stock.inputs([sample])
        with torch.inference_mode():
            out = stock.model.generate(**inputs, do_sample=False, max_new_tokens=5)
        expected = stock.tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
        assert answer == expected


# -- videos ------------------------------------------------------------------------------------------------------------


def write_video(path, count=5, size=32):
    """A short MPEG-4 file whose frames differ (PyAV)."""
    import av
    import numpy as np

    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=4)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for _ in range(count):
            frame = av.VideoFrame.from_ndarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def video_request(path, question, doc_id=0):
    from lmms_eval.api.instance import Instance

    args = (question, {"max_new_tokens": 4, "until": []}, lambda doc: [str(path)], doc_id, "toy", "test")
    return Instance("generate_until", args, idx=0, metadata={"task": "toy", "doc_id": doc_id, "repeats": 1})


@pytest.mark.slow
def test_a_video_reaches_a_video_model_as_one_video(tmp_path, checkpoints):
    """Qwen2-VL, mode=original: the answer is the stock model's on the processor's video inputs, built here from
    the file's frames decoded independently, with one video slot before the question."""
    import av
    from lmms_eval.models import get_model

    from ..helpers import texts

    video = write_video(tmp_path / "clip.mp4")
    path = checkpoints["qwen2_vl"]
    adapter = get_model("futuremask").create_from_arg_string(f"pretrained={path},device=cpu,video_frames=8", {})
    adapter.task_dict = {"toy": {"test": [{}]}}
    request = video_request(video, "What happens?")
    (answer,) = texts(adapter.generate_until([request]))
    assert not answer.startswith(ERROR_MARKER)
    with av.open(str(video)) as container:
        frames = [f.to_image().convert("RGB") for f in container.decode(video=0)]
    assert len(frames) == 5  # fewer than video_frames: every frame is used
    processor = adapter.vlm.processor
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "\nWhat happens?"}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert request.arguments[0] == prompt and prompt.count("<|video_pad|>") == 1  # the prompt the model was fed
    inputs = processor(text=[prompt], videos=[frames], return_tensors="pt")
    with torch.inference_mode():
        out = adapter.vlm.model.generate(**inputs, do_sample=False, max_new_tokens=4)
    assert answer == processor.tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)


@pytest.mark.slow
def test_a_video_for_a_model_without_video_fails_its_sample_and_frames_as_video_is_refused(
    tmp_path, checkpoints, monkeypatch
):
    """Gemma 3's processor ignores ``videos=``: the sample fails, saying so (its frames are never dropped
    silently), and frames_as_video=true is refused before the weights load."""
    from lmms_eval.models import get_model

    from lmms_futuremask.runtime import vlm as vlm_module
    from lmms_futuremask.runtime.model_args import ModelArgsError

    from ..helpers import texts

    path = checkpoints["gemma3"]
    adapter = get_model("futuremask").create_from_arg_string(f"pretrained={path},device=cpu", {})
    adapter.task_dict = {"toy": {"test": [{}, {}]}}
    video = write_video(tmp_path / "clip.mp4")
    image = tmp_path / "image.png"
    sample_images(1, 48)[0].save(image)
    answers = texts(adapter.generate_until([video_request(video, "What happens?"), video_request(image, "And?", 1)]))
    assert answers[0].startswith(ERROR_MARKER) and "does not take" in answers[0], answers
    assert not answers[1].startswith(ERROR_MARKER)  # an image sample beside it is answered

    def never(*args, **kwargs):
        raise AssertionError("the weights loaded")

    monkeypatch.setattr(vlm_module, "load_model", never)
    with pytest.raises(ModelArgsError, match=r"frames_as_video=true, but .* takes no video"):
        get_model("futuremask").create_from_arg_string(f"pretrained={path},device=cpu,frames_as_video=true", {})


def test_frames_given_as_one_video_leave_no_stray_newlines():
    """Three prepended images as one video: one video slot, then the question after a single newline, as one image
    would be; text between interleaved frames stays."""
    from lmms_futuremask.runtime.prompting import chat_messages

    (turn,) = chat_messages("What happens?", 3, video=True)
    assert turn["content"] == [{"type": "video"}, {"type": "text", "text": "\nWhat happens?"}]
    (turn,) = chat_messages("First <image> then <image> so <image> end", 3, video=True)
    texts_between = [part["text"] for part in turn["content"] if part["type"] == "text"]
    assert texts_between == ["First ", " then ", " so ", " end"] and turn["content"][1] == {"type": "video"}
    (turn,) = chat_messages("What happens?", 3)  # images keep one slot each
    assert [part["type"] for part in turn["content"]] == ["image", "text", "image", "text", "image", "text"]
