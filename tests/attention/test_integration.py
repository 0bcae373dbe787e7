"""enable() on a real transformers LLaVA, checked against a stock model fed explicit masks."""

import copy

import pytest
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

import lmms_futuremask as fm
from lmms_futuremask.attention.masks import FUTURE_MODES
from lmms_futuremask.runtime.continuation import position_ids_from

from ..helpers import PROMPTS, manual_greedy, processor_inputs, stock_prefill

NEW_TOKENS = 6


@pytest.fixture(scope="module")
def processor(tiny_model_dir):
    return AutoProcessor.from_pretrained(tiny_model_dir)


def load(tiny_model_dir, attn="sdpa"):
    return AutoModelForImageTextToText.from_pretrained(tiny_model_dir, attn_implementation=attn).eval()


@pytest.fixture(scope="module")
def stock_eager(tiny_model_dir):
    return load(tiny_model_dir, "eager")


def greedy(model, inputs, new_tokens=NEW_TOKENS):
    out = model.generate(**inputs, do_sample=False, max_new_tokens=new_tokens, min_new_tokens=new_tokens)
    return out[:, inputs["input_ids"].shape[1] :]


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("mode", fm.MODES)
def test_prefill_logits_equal_stock_model_with_explicit_mask(tiny_model_dir, processor, stock_eager, mode, attn):
    inputs = processor_inputs(processor, PROMPTS)  # three prompts, 1-3 images, left padded
    expected = stock_prefill(stock_eager, inputs, mode).logits
    model = fm.enable(load(tiny_model_dir, attn), mode)
    with torch.inference_mode():
        got = model(**inputs, position_ids=position_ids_from(inputs["attention_mask"])).logits
    real = inputs["attention_mask"].bool()
    torch.testing.assert_close(got[real], expected[real], atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("mode", FUTURE_MODES)
def test_sdpa_segments_route_equals_stock_model_with_explicit_mask(
    tiny_model_dir, processor, stock_eager, mode, monkeypatch
):
    """The SDPA segments route (forced on: any work share) against the stock model fed the mode's mask; a spy shows
    the route ran."""
    from lmms_futuremask.attention import integration, segments

    monkeypatch.setattr(segments, "SEGMENT_WORK_SHARE", 1.0)
    calls = []
    monkeypatch.setattr(
        integration, "segment_attention", lambda *a, **k: calls.append(1) or segments.segment_attention(*a, **k)
    )
    inputs = processor_inputs(processor, PROMPTS)
    expected = stock_prefill(stock_eager, inputs, mode).logits
    model = fm.enable(load(tiny_model_dir), mode)
    with torch.inference_mode():
        got = model(**inputs, position_ids=position_ids_from(inputs["attention_mask"])).logits
    real = inputs["attention_mask"].bool()
    assert len(calls) == model.config.text_config.num_hidden_layers
    torch.testing.assert_close(got[real], expected[real], atol=2e-5, rtol=1e-5)


def test_future_modes_change_the_prefill(tiny_model_dir, processor):
    """Guards the test above: the modes must actually differ on these prompts."""
    inputs = processor_inputs(processor, PROMPTS[1:2])
    logits = {}
    for mode in fm.MODES:
        with torch.inference_mode():
            logits[mode] = fm.enable(load(tiny_model_dir), mode)(**inputs).logits
    for mode in FUTURE_MODES:
        assert not torch.allclose(logits[mode], logits["original"]), mode
    assert torch.equal(logits["causal"], logits["original"])  # LLaVA's stock mask is causal already
    assert not torch.allclose(logits["future_v2v"], logits["future_v2t"])


@pytest.mark.parametrize("mode", fm.MODES)
def test_generate_equals_masked_prefill_then_causal_decode(tiny_model_dir, processor, stock_eager, mode):
    model = fm.enable(load(tiny_model_dir, "eager"), mode)
    eos = processor.tokenizer.eos_token_id
    for prompt in PROMPTS:
        inputs = processor_inputs(processor, [prompt])
        with torch.inference_mode():
            got = model.generate(**inputs, do_sample=False, max_new_tokens=NEW_TOKENS)
        got = got[0, inputs["input_ids"].shape[1] :].tolist()
        assert got == manual_greedy(stock_eager, inputs, mode, NEW_TOKENS, eos), prompt[0]


def test_decode_steps_receive_no_custom_mask(tiny_model_dir, processor):
    """Only the prompt prefill carries the mode to the attention calls; decode steps are the stock causal path."""
    model = fm.enable(load(tiny_model_dir), "future")
    seen = []

    def spy(module, args, kwargs):
        mask = kwargs.get("attention_mask")
        seen.append((kwargs["inputs_embeds"].shape[1], "futuremask" in kwargs, None if mask is None else mask.dim()))

    # Registered after enable(): runs after its hook, so it sees what the decoder receives.
    handle = model.get_decoder().register_forward_pre_hook(spy, with_kwargs=True)
    inputs = processor_inputs(processor, PROMPTS[:2])
    with torch.inference_mode():
        greedy(model, inputs)
    handle.remove()
    prompt_length = inputs["input_ids"].shape[1]
    assert seen[0] == (prompt_length, True, 2)
    assert len(seen) == NEW_TOKENS
    assert all(length == 1 and not carried and dims == 2 for length, carried, dims in seen[1:]), seen


@pytest.mark.parametrize("mode", fm.MODES)
def test_left_padded_batch_equals_single_prompts(tiny_model_dir, processor, mode):
    model = fm.enable(load(tiny_model_dir), mode)
    with torch.inference_mode():
        batched = greedy(model, processor_inputs(processor, PROMPTS))
        singles = [greedy(model, processor_inputs(processor, [p]))[0] for p in PROMPTS]
    for row, single in zip(batched, singles, strict=False):
        assert row.tolist() == single.tolist()


def test_original_is_bit_identical_to_the_unpatched_model(tiny_model_dir, processor):
    inputs = processor_inputs(processor, PROMPTS)
    stock = load(tiny_model_dir)
    patched = fm.enable(load(tiny_model_dir), "original")
    with torch.inference_mode():
        assert torch.equal(patched(**inputs).logits, stock(**inputs).logits)
        assert torch.equal(greedy(patched, inputs), greedy(stock, inputs))


def test_disable_restores_stock_behaviour(tiny_model_dir, processor):
    inputs = processor_inputs(processor, PROMPTS[:1])
    stock = load(tiny_model_dir)
    model = fm.enable(load(tiny_model_dir), "future")
    assert fm.current_mode(model) == "future"
    fm.enable(model, "future_v2t")  # reconfiguring replaces the hooks
    assert len(model._forward_pre_hooks) == 1
    fm.disable(model)
    assert fm.current_mode(model) is None
    with torch.inference_mode():
        assert torch.equal(model(**inputs).logits, stock(**inputs).logits)


def test_text_only_prompt_is_unchanged(tiny_model_dir, processor):
    inputs = processor.tokenizer(["USER: Answer with one word. ASSISTANT:"], return_tensors="pt")
    stock = load(tiny_model_dir)
    model = fm.enable(load(tiny_model_dir), "mma")
    with torch.inference_mode():
        assert torch.equal(model(**inputs).logits, stock(**inputs).logits)


def test_bad_arguments_name_the_valid_values(tiny_model_dir):
    model = load(tiny_model_dir)
    with pytest.raises(ValueError, match="valid modes are: original, future, future_v2v, future_v2t, mma"):
        fm.enable(model, "future_v3")
    with pytest.raises(ValueError, match="valid values are: none, kernel"):
        fm.enable(model, "future", merge="kernal")
    with pytest.raises(ValueError, match="only apply with merge='kernel'"):
        fm.enable(model, "future", merge_pool="max")
    with pytest.raises(ValueError, match="valid options: merge_pool, merge_kernel, merge_prefix"):
        fm.enable(model, "future", merge="kernel", merge_size=3)
    with pytest.raises(ValueError, match="original has none"):
        fm.enable(model, "original", merge="kernel")
    with pytest.raises(ValueError, match="valid values are: mean, max"):
        fm.enable(model, "future", merge="kernel", merge_pool="median")
    with pytest.raises(ValueError, match=">= 1"):
        fm.enable(model, "future", merge="kernel", merge_kernel=0)
    assert fm.current_mode(model) is None


def test_a_backend_that_would_drop_the_mask_is_refused(tiny_model_dir, monkeypatch):
    model = load(tiny_model_dir)
    monkeypatch.setattr(model.get_decoder().config, "_attn_implementation", "paged_attention")
    with pytest.raises(ValueError, match="'paged_attention' would ignore it"):
        fm.enable(model, "future")
    fm.enable(model, "original")  # nothing to mask: allowed


def test_backend_switch_after_enable_is_caught(tiny_model_dir, processor, monkeypatch):
    model = fm.enable(load(tiny_model_dir), "future")
    monkeypatch.setattr(model.get_decoder().config, "_attn_implementation", "flash_attention_2")
    with pytest.raises(ValueError, match="changed after enable"), torch.inference_mode():
        model(**processor_inputs(processor, PROMPTS[:1]))


def test_decode_step_that_emits_the_image_token_stays_causal(tiny_model_dir, processor):
    """A generated ``<image>`` id is text: with a cache and no pixels, the stock causal path runs."""
    inputs = processor_inputs(processor, PROMPTS[:1])
    model = fm.enable(load(tiny_model_dir), "future")
    step = {
        "input_ids": torch.tensor([[model.config.image_token_id]]),
        "attention_mask": torch.cat([inputs["attention_mask"], torch.ones(1, 1, dtype=torch.long)], dim=1),
    }
    with torch.inference_mode():
        cache = model(**inputs, use_cache=True).past_key_values
        cache_copy = copy.deepcopy(cache)
        patched = model(**step, past_key_values=cache).logits
        fm.disable(model)
        stock = model(**step, past_key_values=cache_copy).logits
    assert torch.equal(patched, stock)


@pytest.mark.parametrize(
    "attn,mode,merge", [("sdpa", "future", "none"), ("eager", "future_v2t", "none"), ("sdpa", "future_v2v", "kernel")]
)
def test_static_cache_generate_equals_dynamic_cache(tiny_model_dir, processor, attn, mode, merge):
    """generate(cache_implementation="static") hands over a 4D mask over the whole cache: same tokens."""
    model = fm.enable(load(tiny_model_dir, attn), mode, merge=merge)
    inputs = processor_inputs(processor, PROMPTS)
    with torch.inference_mode():
        dynamic = greedy(model, inputs)
        out = model.generate(
            **inputs,
            do_sample=False,
            max_new_tokens=NEW_TOKENS,
            min_new_tokens=NEW_TOKENS,
            cache_implementation="static",
        )
    assert torch.equal(out[:, inputs["input_ids"].shape[1] :], dynamic)
    assert not torch.equal(dynamic, greedy(load(tiny_model_dir, attn), inputs))  # the mode mattered
