"""A scored continuation is never inside the relaxed prompt: it equals teacher-forced decode steps."""

import pytest
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

import lmms_futuremask as fm
from lmms_futuremask.runtime.continuation import position_ids_from, score_continuations

from ..helpers import PROMPTS, processor_inputs, stock_prefill

CONTINUATIONS = [" red", " the first image is brighter", " B. yes"]


@pytest.fixture(scope="module")
def processor(tiny_model_dir):
    return AutoProcessor.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def stock_eager(tiny_model_dir):
    return AutoModelForImageTextToText.from_pretrained(tiny_model_dir, attn_implementation="eager").eval()


@torch.inference_mode()
def teacher_forced(stock_eager, inputs, mode, tokens):
    """Masked prefill, then one decode step per continuation token, summing each token's log-prob."""
    out = stock_prefill(stock_eager, inputs, mode)
    cache, mask, total = out.past_key_values, inputs["attention_mask"], 0.0
    logits = out.logits[:, -1]
    for token in tokens:
        total += float(torch.log_softmax(logits.float(), -1)[0, token])
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        out = stock_eager(
            input_ids=torch.tensor([[token]]),
            attention_mask=mask,
            position_ids=position_ids_from(mask)[:, -1:],
            past_key_values=cache,
            use_cache=True,
        )
        cache, logits = out.past_key_values, out.logits[:, -1]
    return total


@pytest.mark.parametrize("mode", fm.MODES)
def test_continuation_logprob_equals_teacher_forced_decode(tiny_model_dir, processor, stock_eager, mode):
    model = fm.enable(AutoModelForImageTextToText.from_pretrained(tiny_model_dir).eval(), mode)
    tok = processor.tokenizer
    continuations = [tok.encode(c, add_special_tokens=False) for c in CONTINUATIONS]
    batched = score_continuations(model, processor_inputs(processor, PROMPTS), continuations, tok.pad_token_id)
    for prompt, tokens, score in zip(PROMPTS, continuations, batched, strict=False):
        single_inputs = processor_inputs(processor, [prompt])
        expected = teacher_forced(stock_eager, single_inputs, mode, tokens)
        assert score.logprob == pytest.approx(expected, abs=1e-4)
        (single,) = score_continuations(model, single_inputs, [tokens], tok.pad_token_id)
        assert single.logprob == pytest.approx(expected, abs=1e-4)
        assert single.is_greedy == score.is_greedy


def test_is_greedy_is_true_for_the_greedy_continuation(tiny_model_dir, processor):
    model = fm.enable(AutoModelForImageTextToText.from_pretrained(tiny_model_dir).eval(), "future")
    inputs = processor_inputs(processor, PROMPTS[:1])
    with torch.inference_mode():
        generated = model.generate(**inputs, do_sample=False, max_new_tokens=3, min_new_tokens=3)
    tokens = generated[0, inputs["input_ids"].shape[1] :].tolist()
    (score,) = score_continuations(model, inputs, [tokens], processor.tokenizer.pad_token_id)
    assert score.is_greedy
    (other,) = score_continuations(model, inputs, [[*tokens[:2], tokens[2] + 1]], processor.tokenizer.pad_token_id)
    assert not other.is_greedy and other.logprob < score.logprob
