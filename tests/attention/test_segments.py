"""flash-attn by segments: causal / full calls merged by log-sum-exp against the sdpa path, alone and in a model
on ``flash_attention_2`` (emulated on the CPU)."""

import pytest
import torch

from lmms_futuremask import MODES
from lmms_futuremask.attention.masks import FUTURE_MODES, build_mask
from lmms_futuremask.attention.segments import (
    SEGMENT_WORK_SHARE,
    SegmentContext,
    prefers_segments,
    reference_kernel,
    sdpa_kernel,
    segment_attention,
    segment_work,
)

from ..helpers import emulated_flash_attention
from ..helpers import two_image_layout as layout


@pytest.mark.parametrize("kernel", [reference_kernel, sdpa_kernel], ids=["flash-emulated", "sdpa"])
@pytest.mark.parametrize("mode", MODES)
def test_segments_equal_sdpa_with_the_bool_mask(mode, kernel):
    """Causal / full calls merged by log-sum-exp reproduce every mode: flash-attn emulated by reference_kernel, and
    the SDPA route's kernel (torch's fused kernels with their log-sum-exp); grouped-query heads, padding."""
    vis, real = layout()
    gen = torch.Generator().manual_seed(1)
    q = torch.randn(2, 4, 300, 16, generator=gen)
    k, v = (torch.randn(2, 2, 300, 16, generator=gen) for _ in range(2))
    got = segment_attention(q, k, v, SegmentContext(vis, real.bool(), mode), 0.25, kernel=kernel)
    allowed = build_mask(vis, mode, real)
    expected = torch.nn.functional.scaled_dot_product_attention(
        q, k.repeat_interleave(2, 1), v.repeat_interleave(2, 1), attn_mask=allowed, scale=0.25
    ).transpose(1, 2)
    rows = real.bool()
    torch.testing.assert_close(got[rows], expected[rows], atol=1e-5, rtol=1e-5)


def brute_force_pairs(vis, mode):
    """Query-key pairs the mode's mask allows, counted from the dense mask (the reference for segment_work)."""
    return int(build_mask(vis[None], mode).sum())


@pytest.mark.parametrize("mode", FUTURE_MODES)
def test_segment_work_counts_the_pairs_the_mask_allows(mode):
    vis, real = layout()
    for b in range(vis.shape[0]):
        row = vis[b][real[b].bool()]
        assert segment_work(row, mode) == brute_force_pairs(row, mode)
    # Guard: the reference tells modes apart on this layout (a count that ignored the mode would fail).
    row = vis[0][real[0].bool()]
    assert len({brute_force_pairs(row, m) for m in FUTURE_MODES}) > 1


def test_segments_are_preferred_only_where_the_mode_opens_few_pairs():
    """A long image followed by a short question: future_v2t opens few pairs (segments), future opens the image's
    whole upper triangle (dense mask)."""
    vis = torch.zeros(1, 1000, dtype=torch.bool)
    vis[0, 10:900] = True
    real = torch.ones(1, 1000, dtype=torch.bool)
    n = vis.shape[1]
    assert brute_force_pairs(vis[0], "future_v2t") <= SEGMENT_WORK_SHARE * n * n
    assert prefers_segments(SegmentContext(vis, real, "future_v2t"))
    assert brute_force_pairs(vis[0], "future") > SEGMENT_WORK_SHARE * n * n
    assert not prefers_segments(SegmentContext(vis, real, "future"))


@pytest.mark.parametrize("mode", ["future", "future_v2t", "mma"])
def test_flash_attention_model_equals_sdpa(tiny_model_dir, monkeypatch, mode):
    """A model on flash_attention_2 (emulated on the CPU): segments at prefill, stock flash at decode."""
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    import lmms_futuremask as fm

    from ..helpers import PROMPTS, processor_inputs

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

    from ..helpers import PROMPTS, processor_inputs

    monkeypatch.setitem(ALL_ATTENTION_FUNCTIONS._global_mapping, "flash_attention_2", emulated_flash_attention)
    inputs = processor_inputs(AutoProcessor.from_pretrained(tiny_model_dir), PROMPTS)
    sdpa = fm.enable(AutoModelForImageTextToText.from_pretrained(tiny_model_dir), "future_v2v", merge="kernel")
    flash = AutoModelForImageTextToText.from_pretrained(tiny_model_dir)
    monkeypatch.setattr(flash.get_decoder().config, "_attn_implementation", "flash_attention_2")
    fm.enable(flash, "future_v2v", merge="kernel")
    with torch.inference_mode():
        real = inputs["attention_mask"].bool()
        torch.testing.assert_close(flash(**inputs).logits[real], sdpa(**inputs).logits[real], atol=5e-5, rtol=1e-4)
