"""FlexAttention against the sdpa path: the BlockMask built from the modes' mask functions, and a whole model."""

import pytest
import torch
from torch.nn.attention.flex_attention import flex_attention

from lmms_futuremask import MODES
from lmms_futuremask.attention.masks import FUTURE_MODES, build_mask, mask_function

from ..helpers import two_image_layout as layout


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


@pytest.mark.slow  # torch.compile
@pytest.mark.parametrize("mode", ["future_v2v", "mma"])
def test_flex_attention_model_prefill_equals_sdpa(tiny_model_dir, mode, fresh_compiler):
    """The real model on attn_implementation=flex_attention (compiled by transformers; prefill only: torch's CPU
    flex kernel does not compile for single-token decode steps, a stock limitation, so decode is not run here)."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    import lmms_futuremask as fm

    from ..helpers import PROMPTS, processor_inputs

    inputs = processor_inputs(AutoProcessor.from_pretrained(tiny_model_dir), PROMPTS)
    logits = {}
    for backend in ("sdpa", "flex_attention"):
        model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir, attn_implementation=backend)
        with torch.inference_mode():
            logits[backend] = fm.enable(model, mode)(**inputs).logits
    real = inputs["attention_mask"].bool()
    torch.testing.assert_close(logits["flex_attention"][real], logits["sdpa"][real], atol=5e-5, rtol=1e-4)
