"""build_mask against a brute-force double loop written straight from the paper's table (REFERENCE section 1)."""

import pytest
import torch

from lmms_futuremask import MODES, build_mask


def brute_force(is_visual, mode, attention_mask=None):
    batch, length = is_visual.shape
    out = torch.zeros(batch, 1, length, length, dtype=torch.bool)
    for b in range(batch):
        for i in range(length):
            for j in range(length):
                if attention_mask is not None and not attention_mask[b, j]:
                    continue
                qv, kv = bool(is_visual[b, i]), bool(is_visual[b, j])
                if j <= i:
                    ok = True
                elif mode in ("original", "causal"):
                    ok = False
                elif mode == "future":
                    ok = qv
                elif mode == "future_v2v":
                    ok = qv and kv
                elif mode == "future_v2t":
                    ok = qv and not kv
                elif mode == "mma":
                    ok = qv != kv
                else:
                    raise AssertionError(mode)
                out[b, 0, i, j] = ok
    return out


def layouts():
    # Two images with text between and after, left padding on the second row.
    v = [0, 1, 1, 1, 0, 0, 1, 1, 0, 0, 0]
    pad = [0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1]
    v2 = [0, 0, 0, 0, 1, 0, 1, 1, 0, 1, 0]
    yield "several_images", torch.tensor([v, v]).bool(), None
    yield "left_padding", torch.tensor([v, v2]).bool(), torch.tensor([[1] * 11, pad])
    yield "text_only", torch.zeros(2, 7, dtype=torch.bool), torch.tensor([[1] * 7, [0, 0, 1, 1, 1, 1, 1]])
    gen = torch.Generator().manual_seed(0)
    yield "random", torch.rand(3, 13, generator=gen) > 0.5, (torch.arange(13) >= torch.tensor([[0], [4], [9]])).long()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name,is_visual,attention_mask", list(layouts()), ids=[n for n, *_ in layouts()])
def test_build_mask_matches_brute_force(mode, name, is_visual, attention_mask):
    got = build_mask(is_visual, mode, attention_mask)
    assert got.dtype == torch.bool and got.shape == (is_visual.shape[0], 1, is_visual.shape[1], is_visual.shape[1])
    assert torch.equal(got, brute_force(is_visual, mode, attention_mask))


def test_text_only_prompt_is_causal_for_every_mode():
    is_visual = torch.zeros(1, 6, dtype=torch.bool)
    causal = torch.tril(torch.ones(6, 6, dtype=torch.bool))
    for mode in MODES:
        assert torch.equal(build_mask(is_visual, mode)[0, 0], causal)


def test_unknown_mode_names_valid_ones():
    with pytest.raises(ValueError, match="future_v2v"):
        build_mask(torch.zeros(1, 3, dtype=torch.bool), "futur")


def test_shape_errors_are_clear():
    with pytest.raises(ValueError, match="batch, length"):
        build_mask(torch.zeros(3, dtype=torch.bool), "future")
    with pytest.raises(ValueError, match="does not match"):
        build_mask(torch.zeros(1, 3, dtype=torch.bool), "future", torch.ones(1, 4))
