"""enable() on every VLM family: each layer keeps its native mask and the mode only adds what it opens.

The reference, per family: record the mask every decoder layer of the stock model receives (eager, a prompt with two
image blocks, windows and chunks smaller than the prompt), write the mode's later keys onto each by a brute-force
loop (or take them away, for ``causal``), and give each layer exactly that mask on a stock eager model. enable() on
sdpa and eager must give that model's prefill logits and greedy tokens; merge=kernel must give the literal merge
reference run on top of each layer's recorded mask.
"""

from __future__ import annotations

import copy
import functools
import sys

import pytest
import torch

import lmms_futuremask as fm
from lmms_futuremask.attention.integration import find_decoder
from lmms_futuremask.attention.masks import FUTURE_MODES
from lmms_futuremask.attention.merge import MergeSettings
from lmms_futuremask.testing.vlms import FAMILY_MODULES, processor_inputs, sample_images, tiny_vlm

from ..references import OPENS, merge_reference

FAMILIES = [name for name in FAMILY_MODULES if name != "florence2"]
#: The fast lane's families, one per kind of native mask: causal (LLaVA), M-RoPE (Qwen2.5-VL), sliding windows with
#: bidirectional image blocks (Gemma 3), chunked attention (Llama 4). The others run in the full suite.
FAST_FAMILIES = ("llava", "qwen2_5_vl", "gemma3", "llama4")
FAMILY_PARAMS = [n if n in FAST_FAMILIES else pytest.param(n, marks=pytest.mark.slow) for n in FAMILIES]
NEW_TOKENS = 4
#: Phi-4-multimodal costs 545 visual tokens per image whatever its size: one image keeps its brute-force loops short.
BATCH = {"phi4_multimodal": (1,)}


@functools.cache
def _built(name):
    torch.manual_seed(0)
    model, processor = tiny_vlm(name).build(0)
    return model, processor


def fresh(name, backend="eager"):
    """A new copy of the family's tiny model with its decoder on ``backend``."""
    model, processor = _built(name)
    model = copy.deepcopy(model)
    find_decoder(model).config._attn_implementation = {"": backend}
    return model, processor


def visual_positions(name, processor, input_ids):
    """Visual positions from the family's visual token strings (not from the library's config lookup)."""
    ids = [processor.tokenizer.convert_tokens_to_ids(t) for t in tiny_vlm(name).visual_tokens]
    return torch.isin(input_ids, torch.tensor(ids))


# -- recording the stock masks and replaying explicit ones ---------------------------------------------------------


def _eager(module):
    return sys.modules[type(module).__module__].eager_attention_forward


@torch.inference_mode()
def stock_masks(name, inputs, attention_backend):
    """The mask each decoder layer receives at the prefill of ``inputs`` in the stock eager model, in call order."""
    recorded = []

    def recording(module, query, key, value, attention_mask, *args, **kwargs):
        if query.shape[2] > 1:
            recorded.append(attention_mask > torch.finfo(attention_mask.dtype).min / 2)
        return _eager(module)(module, query, key, value, attention_mask, *args, **kwargs)

    model, _ = fresh(name, attention_backend(recording))
    model(**inputs)
    return recorded


def explicit_masks(masks):
    """An eager attention function that gives the prefill calls ``masks`` (bool, in call order) instead of their own."""
    calls = []

    def explicit(module, query, key, value, attention_mask, *args, **kwargs):
        if query.shape[2] > 1:
            allowed = masks[len(calls) % len(masks)]
            calls.append(1)
            zero, low = torch.tensor(0.0), torch.tensor(torch.finfo(query.dtype).min)
            attention_mask = torch.where(allowed, zero, low).to(query.dtype)
        return _eager(module)(module, query, key, value, attention_mask, *args, **kwargs)

    return explicit


def write_mode(native, is_visual, real, mode):
    """The brute-force reference: ``native`` [B, 1, L, K] with the mode's later keys added (or, causal, removed)."""
    out = native.clone()
    batch, _, length, _ = native.shape
    for b in range(batch):
        for i in range(length):
            for j in range(i + 1, length):
                if mode == "causal":
                    out[b, 0, i, j] = False
                elif real[b, j] and OPENS[mode](bool(is_visual[b, i]), bool(is_visual[b, j])):
                    out[b, 0, i, j] = True
    return out


@torch.inference_mode()
def reference_run(name, inputs, mode, attention_backend, generate=False):
    """The stock eager model with each layer's recorded mask plus the mode given explicitly at the prefill."""
    _, processor = _built(name)
    is_visual = visual_positions(name, processor, inputs["input_ids"])
    real = inputs["attention_mask"].bool()
    masks = [write_mode(m, is_visual, real, mode) for m in stock_masks(name, inputs, attention_backend)]
    model, _ = fresh(name, attention_backend(explicit_masks(masks)))
    if generate:
        out = model.generate(**inputs, do_sample=False, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS)
        return out[:, inputs["input_ids"].shape[1] :]
    return model(**inputs).logits


@functools.cache
def inputs_of(name, counts=(2,)):
    _, processor = _built(name)
    return processor_inputs(name, processor, list(counts))


# -- the tests ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["sdpa", "eager"])
@pytest.mark.parametrize("mode", [*FUTURE_MODES, "causal"])
@pytest.mark.parametrize("name", FAMILY_PARAMS)
def test_prefill_equals_each_layers_native_mask_plus_the_mode(name, mode, backend, attention_backend):
    inputs = inputs_of(name, BATCH.get(name, (2, 1)))  # a left-padded batch: two image blocks, and one
    expected = reference_run(name, inputs, mode, attention_backend)
    model, _ = fresh(name, backend)
    fm.enable(model, mode)
    with torch.inference_mode():
        got = model(**inputs).logits
    real = inputs["attention_mask"].bool()
    torch.testing.assert_close(got[real], expected[real], atol=5e-5, rtol=1e-4)


@pytest.mark.parametrize("name", FAMILY_PARAMS)
def test_the_reference_above_can_fail(name, attention_backend):
    """Guard: the mode changes the recorded masks of these prompts, and then the logits."""
    inputs = inputs_of(name, BATCH.get(name, (2, 1)))
    model, processor = fresh(name, "eager")
    with torch.inference_mode():
        stock = model(**inputs).logits
    is_visual = visual_positions(name, processor, inputs["input_ids"])
    natives = stock_masks(name, inputs, attention_backend)
    real = inputs["attention_mask"].bool()
    changed = any(not torch.equal(write_mode(m, is_visual, real, "future"), m) for m in natives)
    if name == "paligemma":  # its whole prompt is a bidirectional prefix already: `future` opens nothing
        assert not changed
        return
    assert changed
    assert not torch.allclose(reference_run(name, inputs, "future", attention_backend)[real], stock[real], atol=1e-4)


@pytest.mark.parametrize("name", FAMILY_PARAMS)
def test_greedy_generate_equals_masked_prefill_then_stock_decode(name, attention_backend):
    inputs = inputs_of(name, BATCH.get(name, (2,)))
    expected = reference_run(name, inputs, "future_v2v", attention_backend, generate=True)
    model, _ = fresh(name, "sdpa")
    fm.enable(model, "future_v2v")
    with torch.inference_mode():
        out = model.generate(**inputs, do_sample=False, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS)
    assert out[:, inputs["input_ids"].shape[1] :].tolist() == expected.tolist()


@pytest.mark.parametrize("name", FAMILY_PARAMS)
def test_original_is_the_stock_model_bit_for_bit(name):
    inputs = inputs_of(name, (2, 1))
    stock, _ = fresh(name, "sdpa")
    model, _ = fresh(name, "sdpa")
    fm.enable(model, "original")
    with torch.inference_mode():
        assert torch.equal(model(**inputs).logits, stock(**inputs).logits)


@pytest.mark.parametrize("name", FAMILY_PARAMS)
def test_left_padded_batch_equals_single_prompts(name):
    model, processor = fresh(name, "sdpa")
    fm.enable(model, "future")
    batch = processor_inputs(name, processor, [2, 1])
    new = {"do_sample": False, "max_new_tokens": NEW_TOKENS, "min_new_tokens": NEW_TOKENS}
    with torch.inference_mode():
        batched = model.generate(**batch, **new)[:, batch["input_ids"].shape[1] :]
        for row, count in enumerate([2, 1]):
            single = processor_inputs(name, processor, [count], seed=row)
            alone = model.generate(**single, **new)[0, single["input_ids"].shape[1] :]
            assert batched[row].tolist() == alone.tolist(), row


@pytest.mark.parametrize(
    "name",
    FAMILY_PARAMS,
)
def test_merge_equals_the_literal_reference_on_each_layers_native_mask(name, attention_backend):
    inputs = inputs_of(name, BATCH.get(name, (2,)))
    settings = MergeSettings("mean", 3, 2)
    _, processor = _built(name)
    is_visual = visual_positions(name, processor, inputs["input_ids"])
    natives = stock_masks(name, inputs, attention_backend)
    reference = merge_reference(is_visual, "future_v2v", settings, inputs["attention_mask"], natives=natives)
    model, _ = fresh(name, attention_backend(reference))
    with torch.inference_mode():
        expected = model(**inputs).logits
    assert reference.calls  # the reference ran
    enabled, _ = fresh(name, "sdpa")
    with torch.inference_mode():
        stock = enabled(**inputs).logits
        fm.enable(enabled, "future_v2v", merge="kernel", merge_pool="mean", merge_kernel=3, merge_prefix=2)
        got = enabled(**inputs).logits
    torch.testing.assert_close(got, expected, atol=5e-5, rtol=1e-4)
    if name != "paligemma":  # guard: the merge changed something (PaliGemma's prefix already sees everything)
        assert not torch.allclose(got, stock, atol=1e-4)


@pytest.mark.parametrize("name", FAMILY_PARAMS)
def test_static_cache_gives_the_dynamic_caches_tokens(name):
    model, _ = fresh(name, "sdpa")
    fm.enable(model, "future")
    inputs = inputs_of(name, (2, 1))
    new = {"do_sample": False, "max_new_tokens": NEW_TOKENS, "min_new_tokens": NEW_TOKENS}
    scores = {"output_scores": True, "return_dict_in_generate": True}
    with torch.inference_mode():
        dynamic = model.generate(**inputs, **new)
        static = model.generate(**inputs, **new, **scores, cache_implementation="static")
        fm.disable(model)
        stock = model.generate(**inputs, **new, **scores, cache_implementation="static")
    assert torch.equal(static.sequences, dynamic)
    if name != "paligemma":  # guard: the mode changed the first token's scores
        assert not torch.allclose(static.scores[0], stock.scores[0], atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["gemma3", "aya_vision", "llama4", "qwen2_vl"])
@pytest.mark.parametrize(("backend", "merge"), [("eager", "none"), ("sdpa", "kernel")])
def test_static_cache_on_per_layer_mask_dicts(name, backend, merge):
    """Families whose generate hands the decoder a dict of masks (one per layer type): the static cache gives the
    dynamic cache's tokens on eager too, and under merge=kernel."""
    model, _ = fresh(name, backend)
    fm.enable(model, "future_v2v", merge=merge)
    inputs = inputs_of(name, (2, 1))
    new = {"do_sample": False, "max_new_tokens": NEW_TOKENS, "min_new_tokens": NEW_TOKENS}
    with torch.inference_mode():
        dynamic = model.generate(**inputs, **new)
        static = model.generate(**inputs, **new, cache_implementation="static")
    assert torch.equal(static, dynamic)


@pytest.mark.parametrize("name", ["gemma3", "paligemma"])
def test_causal_removes_the_bidirectional_blocks(name):
    """Gemma 3's image blocks and PaliGemma's prefix come from token_type_ids: without them the stock model is
    causal, which is what mode=causal gives with them."""
    inputs = inputs_of(name)
    stock, _ = fresh(name, "eager")
    model, _ = fresh(name, "sdpa")
    fm.enable(model, "causal")
    without_blocks = {k: v for k, v in inputs.items() if k != "token_type_ids"}
    with torch.inference_mode():
        blocks = stock(**inputs).logits
        expected = stock(**without_blocks).logits
        got = model(**inputs).logits
    torch.testing.assert_close(got, expected, atol=5e-5, rtol=1e-4)
    assert not torch.allclose(blocks, expected, atol=1e-4)  # the blocks mattered


def test_encoder_decoder_models_are_refused():
    model, _ = tiny_vlm("florence2").build(0)
    with pytest.raises(ValueError, match="encoder-decoder model"):
        fm.enable(model, "future")


def test_a_prefill_the_mode_never_reached_raises(monkeypatch):
    from lmms_futuremask.attention.integration import Prefill

    model, _ = fresh("qwen2_vl", "sdpa")
    fm.enable(model, "future")
    monkeypatch.setattr(Prefill, "covers", lambda self, module: False)  # as if no attention call took the mode
    with pytest.raises(RuntimeError, match="none of its attention calls received the future mask"):
        model(**inputs_of("qwen2_vl"))


@pytest.mark.parametrize("name", ["llava", pytest.param("phi4_multimodal", marks=pytest.mark.slow)])
def test_images_the_decoder_never_saw_raise(name):
    """Phi-4-multimodal passes its images as ``image_pixel_values``: they count as pixels too."""
    model, _ = fresh(name, "sdpa")
    fm.enable(model, "future")
    model._futuremask.handles[2].remove()  # the decoder's hook never fires
    with pytest.raises(RuntimeError, match="was never called with it: the future mask was not applied"):
        with torch.inference_mode():
            model(**inputs_of(name, (1,)))


def video_inputs(name):
    """A prompt with one 4-frame video (the model's video placeholder expanded by its processor), float32."""
    _, processor = _built(name)
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "What happened next?"}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    batch = processor(text=[text], videos=[sample_images(4, 48, 0)], return_tensors="pt", padding=True)
    return {k: v.float() if v.is_floating_point() else v for k, v in batch.items()}


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["future_v2v", "mma"])
def test_video_frames_are_visual_positions(mode, attention_backend):
    """LLaVA-NeXT-Video: the video's frame tokens take the mode like image tokens (prefill against the recorded
    native masks plus the mode, on sdpa and eager), and greedy generate is that prefill then stock decode."""
    name = "llava_next_video"
    inputs = video_inputs(name)
    assert "pixel_values_videos" in inputs
    _, processor = _built(name)
    assert visual_positions(name, processor, inputs["input_ids"]).sum() > 0
    expected = reference_run(name, inputs, mode, attention_backend)
    stock, _ = fresh(name, "sdpa")
    with torch.inference_mode():
        assert not torch.allclose(stock(**inputs).logits, expected, atol=1e-4)  # guard: the mode mattered
    for backend in ("sdpa", "eager"):
        model, _ = fresh(name, backend)
        fm.enable(model, mode)
        with torch.inference_mode():
            torch.testing.assert_close(model(**inputs).logits, expected, atol=5e-5, rtol=1e-4)
    new = {"do_sample": False, "max_new_tokens": NEW_TOKENS, "min_new_tokens": NEW_TOKENS}
    with torch.inference_mode():
        got = model.generate(**inputs, **new)[:, inputs["input_ids"].shape[1] :]
    assert got.tolist() == reference_run(name, inputs, mode, attention_backend, generate=True).tolist()


@pytest.mark.slow
def test_visual_token_ids_override_what_counts_as_visual(attention_backend):
    """``visual_token_ids`` replaces the config's ids: Qwen2-VL with its ``<|vision_start|>`` marker counted as
    visual equals the reference built with that marker visual; the config's own id alone is the default."""
    name = "qwen2_vl"
    inputs = inputs_of(name)
    _, processor = _built(name)
    pad, start = (processor.tokenizer.convert_tokens_to_ids(t) for t in ("<|image_pad|>", "<|vision_start|>"))

    def logits(**options):
        model, _ = fresh(name, "sdpa")
        fm.enable(model, "future", **options)
        with torch.inference_mode():
            return model(**inputs).logits

    default, overridden = logits(), logits(visual_token_ids=(pad, start))
    assert torch.equal(logits(visual_token_ids=(pad,)), default)
    is_visual = torch.isin(inputs["input_ids"], torch.tensor([pad, start]))
    real = inputs["attention_mask"].bool()
    masks = [write_mode(m, is_visual, real, "future") for m in stock_masks(name, inputs, attention_backend)]
    reference, _ = fresh(name, attention_backend(explicit_masks(masks)))
    with torch.inference_mode():
        torch.testing.assert_close(overridden, reference(**inputs).logits, atol=5e-5, rtol=1e-4)
    assert not torch.allclose(overridden, default, atol=1e-4)  # guard: the marker changed the mask
    with pytest.raises(ValueError, match="visual_token_ids=\\(\\) names no token"):
        fm.enable(fresh(name, "sdpa")[0], "future", visual_token_ids=())


@pytest.mark.parametrize("name", ["mistral3", "aya_vision", "qwen2_vl"])
def test_flash_attention_by_segments_keeps_each_layers_window(name, monkeypatch):
    """flash-attn (emulated on the CPU) computes causal attention within each layer's window; the segments add the
    mode's later keys on top, which gives what sdpa gives with the layers' native masks."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    from ..helpers import emulated_flash_attention

    monkeypatch.setitem(ALL_ATTENTION_FUNCTIONS._global_mapping, "flash_attention_2", emulated_flash_attention)
    inputs = inputs_of(name, (2, 1))
    real = inputs["attention_mask"].bool()
    logits = {}
    for backend in ("sdpa", "flash_attention_2"):
        stock, _ = fresh(name, backend)
        model, _ = fresh(name, backend)
        fm.enable(model, "future")
        with torch.inference_mode():
            logits[backend] = (stock(**inputs).logits, model(**inputs).logits)
    torch.testing.assert_close(logits["flash_attention_2"][0][real], logits["sdpa"][0][real], atol=5e-5, rtol=1e-4)
    torch.testing.assert_close(logits["flash_attention_2"][1][real], logits["sdpa"][1][real], atol=5e-5, rtol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize(("name", "mode"), [("gemma3", "future_v2v"), ("llama4", "future_v2t"), ("aya_vision", "mma")])
def test_flex_attention_keeps_windows_and_image_blocks(name, mode, fresh_compiler):
    """flex_attention (a BlockMask per layer type): Gemma 3's sliding and full layers with image blocks, Llama 4's
    chunked layers, Aya Vision's sliding layers."""
    inputs = inputs_of(name, (2,))
    logits = {}
    for backend in ("sdpa", "flex_attention"):
        model, _ = fresh(name, backend)
        fm.enable(model, mode)
        with torch.inference_mode():
            logits[backend] = model(**inputs).logits
    torch.testing.assert_close(logits["flex_attention"], logits["sdpa"], atol=5e-5, rtol=1e-4)
