"""Future masks on flash-attn, exactly, by splitting each prompt into segments and merging by log-sum-exp.

flash-attn takes no arbitrary mask, only causal (bottom-right aligned) or full attention over a key range. Every mode
still decomposes into such calls: a row's allowed keys are its causal past plus, for a relaxed row in a run of
same-modality tokens ``[s, e]``, (a) the later keys of the run itself, when the mode lets the run see its own
modality, and (b) the allowed keys after the run, which are the same for every row of the run. So, per prompt:

* part A: causal attention over the whole (unpadded) prompt, within the layer's sliding window if it has one (what
  flash-attn computes natively);
* part B, per relaxed run: full attention over the allowed keys after it;
* part C, per relaxed run: the run's strict future within itself, as a causal call on the reversed run
  (queries ``e-1 .. s`` against keys ``e .. s+1``);

and the parts are merged by their log-sum-exp. No call has an empty row. Without flash-attn installed (tests, CPUs),
:func:`reference_kernel` computes the same thing in torch.

The same split serves SDPA (:func:`sdpa_kernel`, torch's fused kernels with their log-sum-exp) where it does less
work than one call with a dense mask: a masked call scores all ``L x L`` pairs, the causal kernel only half of them,
so when the mode opens few later keys (``future_v2t``: visual rows see the text after their image), the parts cost
about what causal attention costs. :func:`prefers_segments` decides from the layout; where the mode opens most of the
upper triangle (``future``, ``future_v2v`` on prompts that are mostly image tokens) the dense mask stays cheaper.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .lse import attention_with_lse
from .masks import RELAXATIONS

#: ``kernel(q [Lq, H, D], k [Lk, Hkv, D], v [Lk, Hkv, D], causal, scale, window) -> (out [Lq, H, D], lse [Lq, H])``
Kernel = Callable[
    [torch.Tensor, torch.Tensor, torch.Tensor, bool, float, int | None], tuple[torch.Tensor, torch.Tensor]
]

FLASH_BACKENDS = ("flash_attention_2", "flash_attention_3")


def reference_kernel(q, k, v, causal: bool, scale: float, window: int | None = None):
    """flash-attn's semantics in torch: causal masks aligned to the bottom right (a query sees the ``window`` keys
    up to its own, when given), fp32 softmax, returns the LSE."""
    groups = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
    scores = torch.einsum("qhd,khd->hqk", q.float(), k.float()) * scale
    if causal:
        lq, lk = q.shape[0], k.shape[0]
        key_pos, query_pos = torch.arange(lk)[None, :], torch.arange(lq)[:, None] + (lk - lq)
        allowed = key_pos <= query_pos
        if window:
            allowed &= key_pos > query_pos - window
        scores = scores.masked_fill(~allowed.to(scores.device), float("-inf"))
    lse = torch.logsumexp(scores, dim=-1)  # [H, Lq]
    out = torch.einsum("hqk,khd->qhd", torch.exp(scores - lse[..., None]), v.float())
    return out.to(q.dtype), lse.transpose(0, 1)


@functools.cache
def flash_kernel() -> Kernel:
    """flash-attn's ``flash_attn_func`` when installed, else :func:`reference_kernel`."""
    try:
        from flash_attn import flash_attn_func
    except ImportError:
        return reference_kernel

    def kernel(q, k, v, causal, scale, window=None):
        out, lse, _ = flash_attn_func(
            q[None],
            k[None],
            v[None],
            softmax_scale=scale,
            causal=causal,
            window_size=(window - 1, window - 1) if window else (-1, -1),
            return_attn_probs=True,
        )
        return out[0], lse[0].transpose(0, 1)

    return kernel


def sdpa_kernel(q, k, v, causal: bool, scale: float, window: int | None = None):
    """A :data:`Kernel` from torch's SDPA kernels (:func:`.lse.attention_with_lse`). No window: the SDPA route is
    taken on plain causal layers only; causal calls here always have as many queries as keys."""
    if window:
        raise ValueError("the SDPA segments kernel takes no sliding window")
    groups = q.shape[1] // k.shape[1]
    k, v = (t.repeat_interleave(groups, dim=1) if groups > 1 else t for t in (k, v))
    out, lse = attention_with_lse(
        q.transpose(0, 1)[None], k.transpose(0, 1)[None], v.transpose(0, 1)[None], scale, causal
    )
    return out[0].transpose(0, 1), lse[0].transpose(0, 1)


#: The segments route is taken when it scores at most this share of the ``L x L`` pairs a masked call scores (the
#: parts carry overhead a single call does not: gathers, log-sum-exp merges; measured on the CPU at 7B widths).
SEGMENT_WORK_SHARE = 0.6


@dataclass
class SegmentContext:
    """The prompt's layout, passed down the decoder as a keyword argument at a prefill."""

    is_visual: torch.Tensor  # [B, L] bool
    real_key: torch.Tensor  # [B, L] bool
    mode: str
    window: int | None = None  # the layer's sliding window, if any (it bounds the causal part only)


def _merge(out: torch.Tensor, lse: torch.Tensor, part_out: torch.Tensor, part_lse: torch.Tensor, rows: slice) -> None:
    """Fold a part computed for ``rows`` into the running ``(out, lse)`` (fp32), in place."""
    old_lse = lse[rows]
    new_lse = torch.logaddexp(old_lse, part_lse)
    out[rows] = (
        out[rows] * torch.exp(old_lse - new_lse)[..., None]
        + part_out.float() * torch.exp(part_lse - new_lse)[..., None]
    )
    lse[rows] = new_lse


def _later_seen(relax, run_visual: bool, vis: torch.Tensor, end: int) -> tuple[set, torch.Tensor]:
    """``(the modalities a run's rows see later, the positions after the run they see)``."""
    query_flag = torch.tensor(run_visual, device=vis.device)
    sees = {flag for flag in (True, False) if bool(relax(query_flag, torch.tensor(flag, device=vis.device)))}
    later = torch.arange(end + 1, vis.shape[0], device=vis.device)
    later_vis = vis[later]
    return sees, later[(later_vis & (True in sees)) | (~later_vis & (False in sees))]


def segment_work(is_visual: torch.Tensor, mode: str) -> int:
    """Query-key pairs the segments route scores for one unpadded prompt (``is_visual [n]``): the causal half plus,
    per relaxed run, its rows times the later keys they see and the upper half of the run itself."""
    relax = RELAXATIONS[mode]
    n = is_visual.shape[0]
    work = n * (n + 1) // 2
    for start, end, run_visual in _runs(is_visual):
        sees, later = _later_seen(relax, run_visual, is_visual, end)
        size = end - start + 1
        work += size * later.numel() + (size * (size - 1) // 2 if run_visual in sees else 0)
    return work


def prefers_segments(context: SegmentContext) -> bool:
    """Whether every batch row's segments cost at most :data:`SEGMENT_WORK_SHARE` of a dense masked call."""
    for b in range(context.is_visual.shape[0]):
        vis = context.is_visual[b][context.real_key[b]]
        if segment_work(vis, context.mode) > SEGMENT_WORK_SHARE * vis.shape[0] ** 2:
            return False
    return True


def _runs(vis: torch.Tensor) -> list[tuple[int, int, bool]]:
    """Maximal runs ``(start, end inclusive, is_visual)`` of same-modality positions."""
    flags = vis.tolist()
    runs, start = [], 0
    for i in range(1, len(flags) + 1):
        if i == len(flags) or flags[i] != flags[start]:
            runs.append((start, i - 1, flags[start]))
            start = i
    return runs


def segment_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    context: SegmentContext,
    scaling: float,
    kernel: Kernel | None = None,
) -> torch.Tensor:
    """The mode's attention for a prompt from causal/full calls only. ``query [B, H, L, D]``, ``key/value
    [B, Hkv, L, D]``; returns ``[B, L, H, D]`` (padding rows are zero)."""
    kernel = kernel or flash_kernel()
    relax = RELAXATIONS[context.mode]
    batch, heads, length, dim = query.shape
    key, value = key[:, :, :length], value[:, :, :length]  # a static cache hands over all its slots
    output = torch.zeros(batch, length, heads, dim, dtype=query.dtype, device=query.device)
    for b in range(batch):
        idx = context.real_key[b].nonzero().flatten()
        q, k, v = (t[b][:, idx].transpose(0, 1).contiguous() for t in (query, key, value))  # [n, heads, D]
        vis = context.is_visual[b][idx]
        part_out, part_lse = kernel(q, k, v, True, scaling, context.window)
        out, lse = part_out.float(), part_lse.float()
        for start, end, run_visual in _runs(vis):
            sees, later = _later_seen(relax, run_visual, vis, end)
            if not sees:
                continue
            if later.numel():
                o, s = kernel(q[start : end + 1], k[later], v[later], False, scaling, None)
                _merge(out, lse, o, s, slice(start, end + 1))
            if run_visual in sees and end > start:
                o, s = kernel(
                    q[start:end].flip(0),
                    k[start + 1 : end + 1].flip(0),
                    v[start + 1 : end + 1].flip(0),
                    True,
                    scaling,
                    None,
                )
                _merge(out, lse, o.flip(0), s.flip(0), slice(start, end))
        output[b, idx] = out.to(query.dtype)
    return output
