"""build_mask against the references: each mode's mask written out by hand on a small prompt, and a brute-force
loop over the paper's table (REFERENCE section 1) on larger ones, padding included."""

import pytest
import torch

from lmms_futuremask import MODES, build_mask

from ..references import EXPECTED, LAYOUT, OPENS, reference_mask


def test_every_mode_has_a_written_out_mask_and_a_rule():
    assert set(EXPECTED) == set(OPENS) == set(MODES)


@pytest.mark.parametrize("mode", MODES)
def test_each_modes_mask_is_the_one_written_out_by_hand(mode):
    got = build_mask(torch.tensor([LAYOUT]), mode)[0, 0]
    assert got.int().tolist() == EXPECTED[mode]
    assert reference_mask(torch.tensor([LAYOUT]), mode)[0, 0].int().tolist() == EXPECTED[mode]  # the two agree


def test_the_references_can_tell_modes_apart():
    # guard: every pair of relaxing modes differs on the hand-written layout, so a swapped mode cannot pass
    relaxing = [m for m in MODES if m not in ("original", "causal")]
    for a in relaxing:
        for b in relaxing:
            assert (EXPECTED[a] == EXPECTED[b]) == (a == b), (a, b)


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
    assert torch.equal(got, reference_mask(is_visual, mode, attention_mask))


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
