"""merge=kernel: the efficient path against the literal reference, and in a real model against a stock one."""

import itertools

import pytest
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

import lmms_futuremask as fm
from lmms_futuremask.attention import merge as merge_module
from lmms_futuremask.attention.lse import attention_with_lse, reference_attention_with_lse
from lmms_futuremask.attention.masks import build_mask
from lmms_futuremask.attention.merge import (
    MergeContext,
    MergeSettings,
    mean_pool_terms,
    merge_attention_lse,
    merge_visual_rows,
    reference_bias,
    reference_merge_attention,
)
from lmms_futuremask.runtime.continuation import position_ids_from

from ..helpers import PROMPTS, causal_decode, processor_inputs
from ..references import merge_reference

FUTURE_MODES = ["future", "future_v2v", "future_v2t", "mma"]


def test_reference_bias_by_hand():
    scores = [1.0, 2.0, 3.0, 4.0, 5.0]
    # k = 3: windows [0:2], [0:3], [1:4], [2:5], [3:5]
    assert reference_bias(scores, MergeSettings("mean", 3, 2)) == pytest.approx([1.75, (3 + 4 + 4.5) / 3])
    assert reference_bias(scores, MergeSettings("max", 3, 2)) == [3.0, 5.0]
    assert reference_bias([7.0], MergeSettings("mean", 25, 4)) == [7.0]  # fewer future keys than k and p
    assert reference_bias(scores, MergeSettings("mean", 1, 1)) == [3.0]


def layout():
    """Two rows: images between text, the second left-padded; GQA-shaped q/k/v in float64."""
    vis = torch.tensor(
        [
            [0, 0, 1, 1, 1, 0, 1, 1, 0, 0, 1, 0, 0, 0],
            [0, 0, 0, 0, 0, 1, 1, 0, 1, 1, 1, 1, 0, 0],
        ]
    ).bool()
    real = torch.tensor([[1] * 14, [0, 0, 0] + [1] * 11])
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(2, 4, 14, 8, generator=gen, dtype=torch.float64) * 1.5
    k = torch.randn(2, 2, 14, 8, generator=gen, dtype=torch.float64) * 1.5
    v = torch.randn(2, 2, 14, 8, generator=gen, dtype=torch.float64)
    return vis, real, q, k, v


@pytest.mark.parametrize(
    "mode,pool,kernel,prefix", list(itertools.product(FUTURE_MODES, ["mean", "max"], [1, 5, 25], [1, 4]))
)
def test_efficient_path_equals_reference(mode, pool, kernel, prefix):
    vis, real, q, k, v = layout()
    settings = MergeSettings(pool, kernel, prefix)
    k_full, v_full = k.repeat_interleave(2, dim=1), v.repeat_interleave(2, dim=1)
    causal = build_mask(vis, "original", real)
    causal = causal | ~causal.any(-1, keepdim=True)  # padding rows: anything finite
    base = torch.nn.functional.scaled_dot_product_attention(q, k_full, v_full, attn_mask=causal)
    output = base.transpose(1, 2).clone()
    context = MergeContext(vis, real.bool(), mode, settings, max_chunk_elements=4 * 14 * 3)  # 3-row chunks
    merge_visual_rows(output, q, k, v, context, scaling=8**-0.5)
    expected = reference_merge_attention(q, k_full, v_full, vis, mode, settings, real, scaling=8**-0.5)
    rows = real.bool()
    torch.testing.assert_close(
        output.transpose(1, 2)[rows[:, None].expand(-1, 4, -1)], expected[rows[:, None].expand(-1, 4, -1)]
    )
    # The bias must matter here, or this test could not fail.
    assert not torch.allclose(base[rows[:, None].expand(-1, 4, -1)], expected[rows[:, None].expand(-1, 4, -1)])


@pytest.mark.parametrize("mode,kernel,prefix", list(itertools.product(FUTURE_MODES, [1, 2, 5, 25], [1, 4])))
def test_lse_route_equals_reference(mode, kernel, prefix):
    """Mean pooling on a causal layer: the prompt without its prefix through a kernel that returns its log-sum-exp,
    the prefix logits with C added, merged, equals the literal reference in float64 (left padding, GQA)."""
    vis, real, q, k, v = layout()
    settings = MergeSettings("mean", kernel, prefix)
    context = MergeContext(vis, real.bool(), mode, settings)
    assert context.lse_route()
    got = merge_attention_lse(q, k, v, context, scaling=8**-0.5).transpose(1, 2)
    expected = reference_merge_attention(
        q, k.repeat_interleave(2, 1), v.repeat_interleave(2, 1), vis, mode, settings, real, scaling=8**-0.5
    )
    rows = real.bool()[:, None].expand(-1, 4, -1)
    torch.testing.assert_close(got[rows], expected[rows], atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("kernel", [1, 3, 5, 8, 25])
@pytest.mark.parametrize("prefix", [1, 2, 3, 7])
def test_mean_pool_terms_give_the_reference_bias(kernel, prefix):
    """The bias as uniform bin weights plus edge corrections equals steps 2-3 for every future length."""
    settings = MergeSettings("mean", kernel, prefix)
    gen = torch.Generator().manual_seed(kernel * 10 + prefix)
    for n in range(1, 41):
        scores = torch.randn(n, generator=gen, dtype=torch.float64)
        a, b, active, ranks, corrections = mean_pool_terms(torch.tensor([n]), settings)
        got = []
        for t in range(prefix):
            if not active[0, t]:
                continue
            uniform = scores[a[0, t] : b[0, t]].mean()
            edges = sum(
                float(c) * float(scores[r]) for r, c in zip(ranks[0, t], corrections[0, t], strict=True) if r >= 0
            )
            got.append(float(uniform) + edges)
        assert got == pytest.approx(reference_bias(scores.tolist(), settings), abs=1e-12), n


def test_lse_route_with_a_dominant_sink_and_a_strongly_negative_bias():
    """The case that broke a rank-p correction of a finished output: the sink holds nearly all the attention and C,
    strongly negative, takes it away. Float64 equals the reference; bfloat16 stays close to it; the bias matters."""
    length, heads, dim = 40, 2, 16
    vis = torch.zeros(1, length, dtype=torch.bool)
    vis[0, 4:30] = True
    gen = torch.Generator().manual_seed(3)
    direction = torch.randn(dim, generator=gen, dtype=torch.float64)
    direction /= direction.norm()
    q = torch.randn(1, heads, length, dim, generator=gen, dtype=torch.float64) * 0.1 + 6 * direction
    k = torch.randn(1, heads, length, dim, generator=gen, dtype=torch.float64) * 0.1
    k[0, :, 0] = 6 * direction  # the sink: score ~ +9 against ~0 for the other keys, so it holds the attention
    k[0, :, 30:] -= 12 * direction  # the text after the image: scores ~ -18, so the future's C is strongly negative
    v = torch.randn(1, heads, length, dim, generator=gen, dtype=torch.float64)
    real = torch.ones(1, length, dtype=torch.long)
    settings = MergeSettings("mean", 5, 1)
    expected = reference_merge_attention(q, k, v, vis, "future", settings, real, scaling=0.25)
    context = MergeContext(vis, real.bool(), "future", settings)
    got = merge_attention_lse(q, k, v, context, scaling=0.25).transpose(1, 2)
    torch.testing.assert_close(got, expected, atol=1e-12, rtol=1e-12)
    causal = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, scale=0.25)
    visual = vis[0]
    assert (expected[0, :, visual] - causal[0, :, visual]).abs().max() > 0.5  # the bias moved the sink's weight
    low = merge_attention_lse(
        *(t.to(torch.bfloat16) for t in (q, k, v)), MergeContext(vis, real.bool(), "future", settings), 0.25
    )
    torch.testing.assert_close(low.transpose(1, 2).double(), expected, atol=0.05, rtol=0.05)


def test_the_lse_route_is_taken_only_where_it_is_exact():
    vis, real, *_ = layout()
    assert MergeContext(vis, real.bool(), "future", MergeSettings("mean", 5, 1)).lse_route()
    assert not MergeContext(vis, real.bool(), "future", MergeSettings("max", 5, 1)).lse_route()
    middle = real.clone()
    middle[0, 6] = 0  # a hole in the middle of the prompt
    assert not MergeContext(vis, middle.bool(), "future", MergeSettings("mean", 5, 1)).lse_route()
    length = vis.shape[1]
    positions = torch.arange(length)
    window = (positions[None, :] <= positions[:, None]) & (positions[None, :] > positions[:, None] - 4)
    native = (window[None] & real.bool()[:, None, :]).expand(2, -1, -1)
    assert not MergeContext(vis, real.bool(), "future", MergeSettings("mean", 5, 1), native=native).lse_route()
    causal = (positions[None, :] <= positions[:, None])[None] & real.bool()[:, None, :]
    assert MergeContext(vis, real.bool(), "future", MergeSettings("mean", 5, 1), native=causal).lse_route()


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_attention_with_lse_equals_the_reference(causal, dtype):
    gen = torch.Generator().manual_seed(5)
    q, k, v = (torch.randn(2, 3, 37, 16, generator=gen, dtype=dtype) for _ in range(3))
    out, lse = attention_with_lse(q, k, v, 0.3, causal)
    ref_out, ref_lse = reference_attention_with_lse(q.double(), k.double(), v.double(), 0.3, causal, chunk=8)
    tolerance = 1e-12 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(out.double(), ref_out, atol=tolerance, rtol=tolerance)
    torch.testing.assert_close(lse.double(), ref_lse, atol=tolerance, rtol=tolerance)


@pytest.fixture(scope="module")
def processor(tiny_model_dir):
    return AutoProcessor.from_pretrained(tiny_model_dir)


@pytest.mark.parametrize("base", ["sdpa", "eager"])
@pytest.mark.parametrize(
    "mode,pool,kernel,prefix", [("future", "mean", 5, 1), ("future_v2v", "max", 3, 4), ("future_v2t", "mean", 25, 2)]
)
def test_whole_model_prefill_equals_stock_model_with_reference_attention(
    tiny_model_dir, processor, attention_backend, base, mode, pool, kernel, prefix
):
    inputs = processor_inputs(processor, PROMPTS)
    positions = position_ids_from(inputs["attention_mask"])
    is_visual = inputs["input_ids"] == processor.tokenizer.convert_tokens_to_ids("<image>")
    settings = MergeSettings(pool, kernel, prefix)
    reference = merge_reference(is_visual, mode, settings, inputs["attention_mask"])
    stock = AutoModelForImageTextToText.from_pretrained(tiny_model_dir)
    stock.config.text_config._attn_implementation = attention_backend(reference)  # the decoder only
    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir, attn_implementation=base)
    fm.enable(model, mode, merge="kernel", merge_pool=pool, merge_kernel=kernel, merge_prefix=prefix)
    with torch.inference_mode():
        expected = stock(**inputs, position_ids=positions).logits
        got = model(**inputs, position_ids=positions).logits
        plain = fm.enable(AutoModelForImageTextToText.from_pretrained(tiny_model_dir), mode)(
            **inputs, position_ids=positions
        ).logits
        causal = AutoModelForImageTextToText.from_pretrained(tiny_model_dir)(**inputs, position_ids=positions).logits
    real = inputs["attention_mask"].bool()
    torch.testing.assert_close(got[real], expected[real], atol=5e-5, rtol=1e-4)
    assert not torch.allclose(got[real], plain[real], atol=1e-3)  # merge differs from the full future mask
    assert not torch.allclose(got[real], causal[real], atol=1e-3)  # and from the causal baseline


def test_text_only_prompt_and_decode_steps_are_untouched(tiny_model_dir, processor, monkeypatch):
    calls = []
    real_merge = merge_module.merge_prefill

    def spy(query, *args, **kwargs):
        calls.append(query.shape[2])
        return real_merge(query, *args, **kwargs)

    monkeypatch.setattr(merge_module, "merge_prefill", spy)
    stock = AutoModelForImageTextToText.from_pretrained(tiny_model_dir)
    model = fm.enable(AutoModelForImageTextToText.from_pretrained(tiny_model_dir), "future", merge="kernel")
    text_only = processor.tokenizer(["USER: Answer with one word. ASSISTANT:"], return_tensors="pt")
    with torch.inference_mode():
        assert torch.equal(model(**text_only).logits, stock(**text_only).logits)
    assert calls == []
    inputs = processor_inputs(processor, PROMPTS[:2])
    with torch.inference_mode():
        out = model.generate(**inputs, do_sample=False, max_new_tokens=5, min_new_tokens=5)
    n_layers = model.config.text_config.num_hidden_layers
    assert calls == [inputs["input_ids"].shape[1]] * n_layers  # the prefill only, once per layer
    # Decode steps are the stock causal path over the merged prefill's cache.
    with torch.inference_mode():
        prefill = model(**inputs, position_ids=position_ids_from(inputs["attention_mask"]), use_cache=True)
        fm.disable(model)
        assert model.config.text_config._attn_implementation == "sdpa"
        manual = causal_decode(model, prefill, inputs["attention_mask"], 5)
    assert torch.equal(out[:, inputs["input_ids"].shape[1] :], manual)
