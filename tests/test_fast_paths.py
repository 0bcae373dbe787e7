"""Fast attention paths against the sdpa path: FlexAttention's BlockMask from the modes' mask functions."""

import pytest
import torch
from torch.nn.attention.flex_attention import flex_attention

from lmms_futuremask import MODES
from lmms_futuremask.attention.masks import FUTURE_MODES, build_mask, mask_function


def layout():
    vis = torch.zeros(2, 300, dtype=torch.bool)
    vis[0, 5:133] = True  # two "images", text around and between
    vis[0, 150:278] = True
    vis[1, 40:168] = True
    real = torch.ones(2, 300, dtype=torch.long)
    real[1, :30] = 0  # left padding
    return vis, real


@pytest.mark.parametrize("mode", MODES)
def test_flex_block_mask_attention_equals_sdpa_with_the_bool_mask(mode):
    vis, real = layout()
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 2, 300, 16, generator=gen) for _ in range(3))
    from torch.nn.attention.flex_attention import create_block_mask

    block_mask = create_block_mask(mask_function(mode, vis, real), 2, None, 300, 300, device="cpu")
    allowed = build_mask(vis, mode, real)
    got = flex_attention(q, k, v, block_mask=block_mask)
    expected = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
    rows = real.bool()[:, None, :, None].expand_as(got)
    torch.testing.assert_close(got[rows], expected[rows], atol=1e-5, rtol=1e-5)
    dense = block_mask.to_dense()  # 128-token blocks: the block sparsity follows the mode
    assert dense.shape[-2:] == (3, 3)
    assert bool(dense[0, 0, 0, 2]) == (mode in FUTURE_MODES)  # block 0 holds visual queries, block 2 their future


@pytest.mark.parametrize("mode", ["future_v2v", "mma"])
def test_flex_attention_model_prefill_equals_sdpa(tiny_model_dir, mode, fresh_compiler):
    """The real model on attn_implementation=flex_attention (compiled by transformers; prefill only: torch's CPU
    flex kernel does not compile for single-token decode steps, a stock limitation, so decode is not run here)."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    import lmms_futuremask as fm

    from .helpers import PROMPTS, processor_inputs

    inputs = processor_inputs(AutoProcessor.from_pretrained(tiny_model_dir), PROMPTS)
    logits = {}
    for backend in ("sdpa", "flex_attention"):
        model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir, attn_implementation=backend)
        with torch.inference_mode():
            logits[backend] = fm.enable(model, mode)(**inputs).logits
    real = inputs["attention_mask"].bool()
    torch.testing.assert_close(logits["flex_attention"][real], logits["sdpa"][real], atol=5e-5, rtol=1e-4)


# -- flash-attn by segments ------------------------------------------------------------------------------------

from lmms_futuremask.attention.segments import SegmentContext, reference_kernel, segment_attention  # noqa: E402

from .helpers import emulated_flash_attention  # noqa: E402


@pytest.mark.parametrize("mode", MODES)
def test_segments_equal_sdpa_with_the_bool_mask(mode):
    """Causal / full calls merged by log-sum-exp reproduce every mode (flash-attn emulated by reference_kernel)."""
    vis, real = layout()
    gen = torch.Generator().manual_seed(1)
    q = torch.randn(2, 4, 300, 16, generator=gen)
    k, v = (torch.randn(2, 2, 300, 16, generator=gen) for _ in range(2))
    got = segment_attention(q, k, v, SegmentContext(vis, real.bool(), mode), 0.25, kernel=reference_kernel)
    allowed = build_mask(vis, mode, real)
    expected = torch.nn.functional.scaled_dot_product_attention(
        q, k.repeat_interleave(2, 1), v.repeat_interleave(2, 1), attn_mask=allowed, scale=0.25
    ).transpose(1, 2)
    rows = real.bool()
    torch.testing.assert_close(got[rows], expected[rows], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("mode", ["future", "future_v2t", "mma"])
def test_flash_attention_model_equals_sdpa(tiny_model_dir, monkeypatch, mode):
    """A model on flash_attention_2 (emulated on the CPU): segments at prefill, stock flash at decode."""
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    import lmms_futuremask as fm

    from .helpers import PROMPTS, processor_inputs

    monkeypatch.setitem(ALL_ATTENTION_FUNCTIONS._global_mapping, "flash_attention_2", emulated_flash_attention)
    inputs = processor_inputs(AutoProcessor.from_pretrained(tiny_model_dir), PROMPTS)
    sdpa = fm.enable(AutoModelForImageTextToText.from_pretrained(tiny_model_dir), mode)
    flash = AutoModelForImageTextToText.from_pretrained(tiny_model_dir)
    monkeypatch.setattr(flash.get_decoder().config, "_attn_implementation", "flash_attention_2")
    fm.enable(flash, mode)
    assert flash.get_decoder().config._attn_implementation == "futuremask_flash_attention_2"
    with torch.inference_mode():
        real = inputs["attention_mask"].bool()
        torch.testing.assert_close(flash(**inputs).logits[real], sdpa(**inputs).logits[real], atol=5e-5, rtol=1e-4)
        new = {"do_sample": False, "max_new_tokens": 6, "min_new_tokens": 6}
        assert torch.equal(flash.generate(**inputs, **new), sdpa.generate(**inputs, **new))
    fm.disable(flash)
    assert flash.get_decoder().config._attn_implementation == "flash_attention_2"


def test_merge_on_flash_attention_equals_merge_on_sdpa(tiny_model_dir, monkeypatch):
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    import lmms_futuremask as fm

    from .helpers import PROMPTS, processor_inputs

    monkeypatch.setitem(ALL_ATTENTION_FUNCTIONS._global_mapping, "flash_attention_2", emulated_flash_attention)
    inputs = processor_inputs(AutoProcessor.from_pretrained(tiny_model_dir), PROMPTS)
    sdpa = fm.enable(AutoModelForImageTextToText.from_pretrained(tiny_model_dir), "future_v2v", merge="kernel")
    flash = AutoModelForImageTextToText.from_pretrained(tiny_model_dir)
    monkeypatch.setattr(flash.get_decoder().config, "_attn_implementation", "flash_attention_2")
    fm.enable(flash, "future_v2v", merge="kernel")
    with torch.inference_mode():
        real = inputs["attention_mask"].bool()
        torch.testing.assert_close(flash(**inputs).logits[real], sdpa(**inputs).logits[real], atol=5e-5, rtol=1e-4)
