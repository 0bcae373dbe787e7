"""Light future-aware attention (the paper's "+merge", ``--compress_future kernel``): our documented reading.

The paper: scores ``h' = Softmax(B + C(B, mu) + Mc)``, where ``C`` summarises by 1-D kernel pooling (max or mean),
per visual query, the scores that mode ``mu`` would have opened in the future, and adds them to the first ``p``
(prefix / attention-sink) key columns; decoding stays causal. Its code is not public; we implement this reading,
in every layer and head, at prefill only, with ``B = QK^T * scale``:

1. For each visual query row ``i``: ``F_i = {j > i : mode opens (i, j), j not padding, the layer's own mask does not
   already allow (i, j)}``, in key order (on a causal layer: every later key the mode opens). Rows that are not
   visual, or whose ``F_i`` is empty, get no bias.
2. ``s = B[i, F_i]`` (``n`` values), smoothed with stride 1 and windows clipped at the ends:
   ``s'_t = pool(s[max(0, t - k//2) : min(n, t - k//2 + k)])``.
3. ``b = min(p, n)`` bins: bin ``t`` is ``s'[floor(t*n/b) : floor((t+1)*n/b)]`` and ``C[i, t] = pool(bin t)``.
4. Weights = softmax over keys of ``B + C + the layer's own mask`` (causal on LLaVA; its window, chunks or image
   blocks elsewhere), ``C[i, t]`` added to the logit of the row's ``t``-th real (non-padding) key. Visual rows do
   not attend what the mode opens directly; only the prefix logits change.

Three implementations. :func:`reference_merge_attention` follows the steps literally (tests). The model runs
:func:`merge_prefill`, which takes one of two exact routes:

* **the log-sum-exp route** (:func:`merge_attention_lse`; mean pooling on a causal layer, the default variant on
  LLaVA): a row's softmax over its keys splits into the keys *after* the prefix and the ``p`` prefix keys. The first
  part is one fused causal kernel call over the prompt without its prefix, which also returns its log-sum-exp
  (:mod:`.lse`); the prefix logits, with ``C`` added on the rows that get a bias, are ``p`` dot products per row;
  the two are merged by their log-sum-exp. Every term is positive, so nothing cancels when the sink holds most of
  the attention and ``C`` lowers it (the case that makes patching a finished output with a rank-``p`` correction
  unusable). ``C`` itself needs no future scores: mean pooling is a fixed weighting of the future keys, uniform over
  a bin except near its edges, so ``C = q . (suffix sums of the keys / bin size + a few edge keys)``, O(L p k d).
  Prefill costs about what the causal kernel costs.
* **the recompute route** (:func:`merge_visual_rows`; max pooling, layers with windows, chunks or image blocks,
  padding in the middle): the base kernel computes every row under the layer's own mask, then the visual rows that
  have a future are recomputed exactly with their bias, in row chunks, from fp32 scores (no per-head ``L x L``
  matrix; future scores only for visual rows).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from ..validation import check_choice
from .lse import attention_with_lse
from .masks import RELAXATIONS
from .native import is_plain_causal

POOLS = ("mean", "max")
MERGES = ("none", "kernel")
MERGE_OPTION_NAMES = ("merge_pool", "merge_kernel", "merge_prefix")


@dataclass(frozen=True)
class MergeSettings:
    """The merge's knobs: pooling (``mean`` or ``max``), smoothing kernel ``k`` and prefix / sink columns ``p``."""

    pool: str = "mean"
    kernel: int = 5
    prefix: int = 1


def merge_settings(merge: str, mode: str, options: dict[str, Any]) -> MergeSettings | None:
    """Validate ``merge`` and its options; None for ``merge="none"``. Errors name the valid values."""
    check_choice("merge", merge, MERGES)
    unknown = sorted(set(options) - set(MERGE_OPTION_NAMES))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown}; valid options: {', '.join(MERGE_OPTION_NAMES)}")
    if merge == "none":
        if options:
            raise ValueError(f"{sorted(options)} only apply with merge='kernel'")
        return None
    if mode == "original":
        raise ValueError("merge='kernel' needs a future mode (future, future_v2v, future_v2t, mma); original has none")
    settings = MergeSettings(
        pool=str(options.get("merge_pool", "mean")),
        kernel=int(options.get("merge_kernel", 5)),
        prefix=int(options.get("merge_prefix", 1)),
    )
    check_choice("merge_pool", settings.pool, POOLS)
    if settings.kernel < 1 or settings.prefix < 1:
        raise ValueError(f"merge_kernel and merge_prefix must be >= 1, got {settings.kernel} and {settings.prefix}")
    return settings


# -- the literal reference ---------------------------------------------------------------------------------------


def _pool(values: list[float], pool: str) -> float:
    return max(values) if pool == "max" else sum(values) / len(values)


def reference_bias(future_scores: list[float], settings: MergeSettings) -> list[float]:
    """Steps 2-3 for one row: ``C[i, 0..b-1]`` from its future scores."""
    n, k = len(future_scores), settings.kernel
    half = k // 2
    smooth = [_pool(future_scores[max(0, t - half) : min(n, t - half + k)], settings.pool) for t in range(n)]
    bins = min(settings.prefix, n)
    return [_pool(smooth[t * n // bins : (t + 1) * n // bins], settings.pool) for t in range(bins)]


def reference_merge_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    is_visual: torch.Tensor,
    mode: str,
    settings: MergeSettings,
    padding_mask: torch.Tensor | None = None,
    scaling: float | None = None,
    native: torch.Tensor | None = None,
) -> torch.Tensor:
    """Steps 1-4 with explicit loops. ``query/key/value`` are ``[B, H, L, D]``; returns ``[B, H, L, D]``.

    ``native`` (``[B, L, L]`` bool) is the layer's own mask; default: causal without padding keys.
    """
    batch, heads, length, dim = query.shape
    scaling = dim**-0.5 if scaling is None else scaling
    real = torch.ones(batch, length, dtype=torch.bool) if padding_mask is None else padding_mask.bool().cpu()
    vis = is_visual.bool().cpu()
    relax = RELAXATIONS[mode]
    out = torch.zeros_like(query)
    for b in range(batch):
        real_keys = [j for j in range(length) if real[b, j]]

        def own(i: int, j: int, b: int = b) -> bool:
            return bool(native[b, i, j]) if native is not None else j <= i and bool(real[b, j])

        for h in range(heads):
            scores = (query[b, h] @ key[b, h].T) * scaling
            for i in range(length):
                logits = scores[i].clone()
                future = [
                    j
                    for j in range(i + 1, length)
                    if real[b, j] and bool(relax(vis[b, i : i + 1], vis[b, j : j + 1])[0]) and not own(i, j)
                ]
                if vis[b, i] and future:
                    bias = reference_bias([float(scores[i, j]) for j in future], settings)
                    for t, c in enumerate(bias):
                        logits[real_keys[t]] += c
                allowed = torch.tensor([own(i, j) for j in range(length)])
                if not allowed.any():
                    continue
                weights = torch.softmax(logits.masked_fill(~allowed, float("-inf")), dim=-1)
                out[b, h, i] = weights @ value[b, h]
    return out


# -- the efficient path ------------------------------------------------------------------------------------------


@dataclass
class MergeContext:
    """What the attention function needs at a merge prefill; passed down the decoder as a keyword argument."""

    is_visual: torch.Tensor  # [B, L] bool
    real_key: torch.Tensor  # [B, L] bool (padding mask)
    mode: str
    settings: MergeSettings
    max_chunk_elements: int = 1 << 24  # scores held at once: heads * rows * keys
    native: torch.Tensor | None = None  # [B, L, K] bool: the layer's own mask (None: causal, padding keys closed)
    _layouts: dict = field(default_factory=dict, repr=False)  # per batch row, shared by every layer
    _weights: dict = field(default_factory=dict, repr=False)  # per (batch row, row chunk), shared by every layer
    _lse_route: bool | None = field(default=None, repr=False)

    def own_mask(self, b: int) -> torch.Tensor:
        """``[L, L]`` bool: the layer's own mask of batch row ``b`` over the prompt's keys."""
        length = self.is_visual.shape[1]
        if self.native is not None:
            return self.native[b, :, :length]
        positions = torch.arange(length, device=self.is_visual.device)
        return (positions[None, :] <= positions[:, None]) & self.real_key[b][None, :]

    def layout(self, b: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(rows that get a bias, their future keys [R, L], their own mask [R, L], sink positions)`` of batch row
        ``b``; the future keys are those the mode opens beyond the layer's own mask."""
        if b not in self._layouts:
            vis, real = self.is_visual[b], self.real_key[b]
            positions = torch.arange(vis.shape[0], device=vis.device)
            later = positions[None, :] > positions[:, None]
            own = self.own_mask(b)
            future_of = later & RELAXATIONS[self.mode](vis[:, None], vis[None, :]) & real[None, :] & ~own
            rows = (vis & future_of.any(-1)).nonzero().flatten()
            sinks = real.nonzero().flatten()[: self.settings.prefix]
            self._layouts[b] = (rows, future_of[rows], own[rows], sinks)
        return self._layouts[b]

    def real_span(self, b: int) -> tuple[int, int] | None:
        """``(start, end)`` of batch row ``b``'s real positions when they form one run (left or right padding)."""
        real = self.real_key[b]
        positions = real.nonzero().flatten()
        if positions.numel() == 0:
            return None
        start, end = int(positions[0]), int(positions[-1]) + 1
        return (start, end) if positions.numel() == end - start else None

    def lse_route(self) -> bool:
        """Whether :func:`merge_attention_lse` applies: mean pooling, the layer's own mask causal over the real keys,
        and real keys that form one run per batch row."""
        if self._lse_route is None:
            self._lse_route = (
                self.settings.pool == "mean"
                and all(self.real_span(b) is not None for b in range(self.is_visual.shape[0]))
                and (self.native is None or is_plain_causal(self.native, self.real_key))
            )
        return self._lse_route

    def mean_terms(self, b: int):
        """:func:`mean_pool_terms` of batch row ``b``'s biased rows with the positions of their future keys, computed
        at the first layer and reused by the others: ``(rows, eligible key positions [N], first rank [R], terms)``."""
        key = ("lse", b)
        if key not in self._weights:
            vis, real = self.is_visual[b], self.real_key[b]
            rows = self.layout(b)[0]
            eligible = (real & RELAXATIONS[self.mode](torch.ones_like(vis), vis)).nonzero().flatten()
            first = torch.searchsorted(eligible, rows, right=True)  # rank of each row's first future key
            self._weights[key] = (rows, eligible, first, mean_pool_terms(eligible.numel() - first, self.settings))
        return self._weights[key]

    def mean_weights(self, b: int, start: int, future: torch.Tensor, dtype: torch.dtype):
        """:func:`mean_pool_weights` of one row chunk, computed at the first layer and reused by the others."""
        if (b, start) not in self._weights:
            weights, active = mean_pool_weights(future, self.settings)
            self._weights[(b, start)] = (weights.to(dtype), active)
        return self._weights[(b, start)]


def _sliding_max(x: torch.Tensor, k: int) -> torch.Tensor:
    """``out[..., u] = max(x[..., u : u + k])`` for every start ``u`` with a full window (sparse-table doubling)."""
    span, level = 1, x
    while span * 2 <= k:
        level = torch.maximum(level[..., :-span], level[..., span:])
        span *= 2
    if span == k:
        return level
    return torch.maximum(level[..., : level.shape[-1] - (k - span)], level[..., k - span :])


def _range_max(values: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """Max of ``values [H, R, L]`` over ``[lo, hi)`` per row and bin (``lo``/``hi``: ``[R, p]``) -> ``[H, R, p]``."""
    positions = torch.arange(values.shape[-1], device=values.device)
    pooled = [
        torch.where((positions >= lo[:, t, None]) & (positions < hi[:, t, None]), values, float("-inf")).amax(-1)
        for t in range(lo.shape[1])
    ]
    return torch.stack(pooled, dim=-1)


def max_pool_bias(
    scores: torch.Tensor, future: torch.Tensor, settings: MergeSettings
) -> tuple[torch.Tensor, torch.Tensor]:
    """Steps 1-3 with max pooling for a chunk of rows. ``scores [H, R, L]``, ``future [R, L]`` bool.

    Returns ``C [H, R, p]`` and ``active [R, p]`` (bin ``t`` exists for the row).
    """
    heads, _rows, length = scores.shape
    k, p = settings.kernel, settings.prefix
    n = future.sum(-1)  # [R]
    order = torch.argsort((~future).to(torch.int8), dim=-1, stable=True)  # future keys first, in key order
    valid = torch.arange(length, device=scores.device) < n[:, None]  # [R, L]
    compact = torch.where(valid, scores.gather(-1, order.expand(heads, -1, -1)), float("-inf"))
    padded = torch.nn.functional.pad(compact, (k // 2, k - 1 - k // 2), value=float("-inf"))
    smooth = torch.where(valid, _sliding_max(padded, k), float("-inf"))

    bins = torch.minimum(n, torch.full_like(n, p))  # [R]
    slot = torch.arange(p, device=scores.device)
    active = slot[None, :] < bins[:, None]
    lo = (slot[None, :] * n[:, None]) // bins.clamp(min=1)[:, None]  # [R, p]
    hi = torch.where(active, ((slot[None, :] + 1) * n[:, None]) // bins.clamp(min=1)[:, None], lo + 1)
    return torch.where(active, _range_max(smooth, lo, hi), 0.0), active


def mean_pool_weights(future: torch.Tensor, settings: MergeSettings) -> tuple[torch.Tensor, torch.Tensor]:
    """Steps 1-3 for mean pooling as fixed key weights: ``C[h, r, t] = sum_j W[r, t, j] * B[h, r, j]``.

    Smoothing and binning by means are linear, and their weights depend only on the layout, not on the scores: they
    are computed once per prompt and turn the per-layer bias into one contraction. ``future [R, L]`` bool; returns
    ``W [R, p, L]`` and ``active [R, p]``.
    """
    rows, length = future.shape
    k, p = settings.kernel, settings.prefix
    device = future.device
    n = future.sum(-1)  # [R]
    bins = torch.minimum(n, torch.full_like(n, p))
    active = torch.arange(p, device=device)[None, :] < bins[:, None]  # [R, p]
    s = torch.arange(length, device=device)[None, :].expand(rows, -1)  # compact output index
    inside = s < n[:, None]
    lo = (s - k // 2).clamp(min=0)
    hi = torch.minimum(n[:, None], s - k // 2 + k)
    width = (hi - lo).clamp(min=1)
    # The bin of output s: the number of bin starts floor(t * n / b) <= s, for t = 1..b-1.
    safe_bins = bins.clamp(min=1)[:, None]
    slot = torch.zeros_like(s)
    for t in range(1, p):
        slot += ((t < bins[:, None]) & ((t * n[:, None]) // safe_bins <= s)).long()
    bin_lo = (slot * n[:, None]) // safe_bins
    bin_hi = ((slot + 1) * n[:, None]) // safe_bins
    share = torch.where(inside, 1.0 / (width * (bin_hi - bin_lo).clamp(min=1)).to(torch.float64), 0.0)
    # Each output s adds `share` to compact keys [lo, hi) of its bin: a difference array, then a running sum.
    diff = torch.zeros(rows, p, length + 1, dtype=torch.float64, device=device)
    diff.view(rows, -1).scatter_add_(1, slot * (length + 1) + lo, share)
    diff.view(rows, -1).scatter_add_(1, slot * (length + 1) + hi, -share)
    compact = torch.cumsum(diff, dim=-1)[..., :length]  # [R, p, L], weights by compact rank
    order = torch.argsort((~future).to(torch.int8), dim=-1, stable=True)  # compact rank -> key position
    ranks_valid = torch.arange(length, device=device)[None, :] < n[:, None]
    weights = torch.zeros(rows, p, length, dtype=torch.float64, device=device)
    weights.scatter_(2, order[:, None, :].expand(-1, p, -1), torch.where(ranks_valid[:, None, :], compact, 0.0))
    return weights, active


def merge_visual_rows(
    output: torch.Tensor,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    context: MergeContext,
    scaling: float,
) -> torch.Tensor:
    """Overwrite, in ``output [B, L, H, D]`` (the causal kernel's result), the rows that get a bias.

    ``query [B, H, L, D]``, ``key/value [B, Hkv, L, D]`` (grouped-query heads are repeated here).
    """
    batch, heads, length, _dim = query.shape
    key, value = key[:, :, :length], value[:, :, :length]  # a static cache hands over all its slots
    groups = heads // key.shape[1]
    compute = torch.promote_types(query.dtype, torch.float32)  # fp32 scores for bf16/fp16 models
    for b in range(batch):
        rows, future_of, own_rows, sinks = context.layout(b)
        if rows.numel() == 0:
            continue
        k_b = key[b].repeat_interleave(groups, dim=0).to(compute)
        v_b = value[b].repeat_interleave(groups, dim=0).to(compute)
        chunk = max(1, context.max_chunk_elements // (heads * length))
        for start in range(0, rows.numel(), chunk):
            r = rows[start : start + chunk]
            scores = torch.matmul(query[b][:, r].to(compute), k_b.transpose(-1, -2)).mul_(scaling)  # [H, R, L]
            if context.settings.pool == "mean":
                weights, active = context.mean_weights(b, start, future_of[start : start + chunk], compute)
                bias = torch.einsum("hrl,rtl->hrt", scores, weights)
            else:
                bias, active = max_pool_bias(scores, future_of[start : start + chunk], context.settings)
            for t in range(sinks.numel()):  # the scores become the biased logits, in place
                scores[:, :, int(sinks[t])] += torch.where(active[:, t], bias[:, :, t], 0.0)
            blocked = ~own_rows[start : start + chunk]
            probs = torch.softmax(scores.masked_fill_(blocked, float("-inf")), dim=-1)
            output[b, r] = torch.matmul(probs, v_b).transpose(0, 1).to(output.dtype)
    return output


# -- the log-sum-exp route (mean pooling on a causal layer) ---------------------------------------------------------


def mean_pool_terms(n: torch.Tensor, settings: MergeSettings) -> tuple[torch.Tensor, ...]:
    """Steps 2-3 for mean pooling, for rows with ``n [R]`` future keys, as weights in compact rank space: bin ``t``
    covers ranks ``[a_t, b_t)`` and weighs them ``1 / (b_t - a_t)``, except near its edges, where the smoothing
    windows are clipped or reach into a neighbouring bin. Those few ranks get a correction.

    Returns ``a, b, active [R, p]`` and ``ranks, corrections [R, p, 4k]``: candidate edge ranks (-1 where unused)
    and their weight minus the uniform one (float64). Every rank at least ``k`` inside a bin has exactly the uniform
    weight: the ``k`` outputs whose windows cover it lie in the bin, each window is ``k`` wide and unclipped.
    """
    k, p = settings.kernel, settings.prefix
    half = k // 2
    device = n.device
    bins = torch.minimum(n, torch.full_like(n, p))
    slot = torch.arange(p, device=device)
    active = slot[None, :] < bins[:, None]
    safe = bins.clamp(min=1)[:, None]
    a = torch.where(active, (slot[None, :] * n[:, None]) // safe, 0)
    b = torch.where(active, ((slot[None, :] + 1) * n[:, None]) // safe, 0)
    size = (b - a).clamp(min=1)[..., None]
    offsets = torch.arange(-k, k, device=device)
    near_a = a[..., None] + offsets
    near_b = b[..., None] + offsets
    near_b = torch.where(near_b >= a[..., None] + k, near_b, -1)  # the others are among near_a already
    ranks = torch.cat([near_a, near_b], dim=-1)
    ranks = torch.where((ranks >= 0) & (ranks < n[:, None, None]) & active[..., None], ranks, -1)
    covered = torch.zeros(ranks.shape, dtype=torch.float64, device=device)
    for d in range(k):  # output s = u + half - d has a window that covers rank u; it counts if s is in the bin
        s = ranks + half - d
        inside = (ranks >= 0) & (s >= a[..., None]) & (s < b[..., None])
        width = torch.minimum(n[:, None, None], s - half + k) - (s - half).clamp(min=0)
        covered += torch.where(inside, 1.0 / width.clamp(min=1).to(torch.float64), 0.0)
    uniform = ((ranks >= a[..., None]) & (ranks < b[..., None])).to(torch.float64)
    corrections = torch.where(ranks >= 0, (covered - uniform) / size, 0.0)
    return a, b, active, ranks, corrections


def _suffix_sums(x: torch.Tensor) -> torch.Tensor:
    """``[..., N + 1, D]``: ``out[..., m, :] = x[..., m:, :].sum(-2)`` (the last one 0). Suffixes, not prefixes:
    a row's whole future is one suffix, so the default single bin is a sum, not a difference of two large ones."""
    flipped = torch.cumsum(torch.flip(x, dims=[-2]), dim=-2)
    return torch.nn.functional.pad(torch.flip(flipped, dims=[-2]), (0, 0, 0, 1))


def _runs(index: torch.Tensor) -> list[tuple[int, int, int]]:
    """``(start, end, step)`` of maximal runs of ``index [R]`` that repeat one value (step 0) or count up by one
    (step 1); any other jump starts a new run. A visual run's rows have consecutive or equal future starts."""
    if index.numel() == 1:
        return [(0, 1, 1)]
    steps = (index[1:] - index[:-1]).tolist()
    runs, start, step = [], 0, steps[0] if steps[0] in (0, 1) else None
    for i, jump in enumerate(steps, start=1):
        if step is None or jump != step:
            runs.append((start, i, 1 if step is None else step))
            start, step = i, None if i >= len(steps) else (steps[i] if steps[i] in (0, 1) else None)
    runs.append((start, index.numel(), 1 if step is None else step))
    return runs


def _rows_dot(query_rows: torch.Tensor, table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``[H, R]``: ``query_rows [H, R, D]`` dotted with ``table [Hkv, N, D]`` at ``index [R]``, by slices of
    ``table`` over runs of the index (no gathered copy of the keys)."""
    heads, rows, dim = query_rows.shape
    groups = heads // table.shape[0]
    grouped = query_rows.view(table.shape[0], groups, rows, dim)
    out = torch.empty(table.shape[0], groups, rows, dtype=query_rows.dtype, device=query_rows.device)
    for start, end, step in _runs(index):
        first = int(index[start])
        if step == 0:
            out[:, :, start:end] = torch.einsum("hgrd,hd->hgr", grouped[:, :, start:end], table[:, first])
        else:
            keys = table[:, first : first + end - start]
            out[:, :, start:end] = torch.einsum("hgrd,hrd->hgr", grouped[:, :, start:end], keys)
    return out.reshape(heads, rows)


def _mean_bias(query_rows, keys, eligible, first, terms, scaling):
    """``C [H, R, p]`` of the biased rows (mean pooling): ``query_rows [H, R, D]``, ``keys [Hkv, L, D]`` in the
    compute dtype. Per bin: the query against the mean of the bin's keys (suffix sums) plus its few edge keys."""
    a, b, active, ranks, corrections = terms
    compact = keys[:, eligible]  # [Hkv, N, D], the future-eligible keys in position order
    suffix = _suffix_sums(compact)
    n_keys = compact.shape[1]
    bias = torch.zeros(*query_rows.shape[:2], a.shape[1], dtype=query_rows.dtype, device=query_rows.device)
    size = (b - a).clamp(min=1).to(query_rows.dtype)
    for t in range(a.shape[1]):
        if not bool(active[:, t].any()):
            continue
        total = _rows_dot(query_rows, suffix, first + a[:, t])
        end = first + b[:, t]
        if bool((end != n_keys).any()):  # suffix[n_keys] is 0: the last bin needs no subtraction
            total = total - _rows_dot(query_rows, suffix, end)
        bias[:, :, t] = total / size[:, t]
        weights = corrections[:, t].to(query_rows.dtype)
        for e in range(ranks.shape[-1]):
            used = ranks[:, t, e] >= 0
            if not bool((weights[:, e] != 0).any()):
                continue
            index = (first + ranks[:, t, e].clamp(min=0)).clamp(max=n_keys - 1)
            bias[:, :, t] += _rows_dot(query_rows, compact, index) * torch.where(used, weights[:, e], 0.0)
    return torch.where(active, bias * scaling, 0.0)


def merge_attention_lse(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, context: MergeContext, scaling: float
) -> torch.Tensor:
    """The merge's attention for every row of a prefill by the log-sum-exp route (see the module docstring).

    ``query [B, H, L, D]``, ``key/value [B, Hkv, L(+), D]``; returns ``[B, L, H, D]`` in the query's dtype (padding
    rows are 0). Needs :meth:`MergeContext.lse_route`.
    """
    batch, heads, length, dim = query.shape
    key, value = key[:, :, :length], value[:, :, :length]
    groups = heads // key.shape[1]
    compute = torch.promote_types(query.dtype, torch.float32)
    output = torch.zeros(batch, length, heads, dim, dtype=query.dtype, device=query.device)
    for b in range(batch):
        start, end = context.real_span(b)
        q = query[b : b + 1, :, start:end]
        k = key[b : b + 1, :, start:end].repeat_interleave(groups, dim=1)
        v = value[b : b + 1, :, start:end].repeat_interleave(groups, dim=1)
        p = min(context.settings.prefix, end - start)
        sinks = torch.matmul(q[0].to(compute), k[0, :, :p].to(compute).transpose(-1, -2)) * scaling  # [H, n, p]
        rows, eligible, first, terms = context.mean_terms(b)
        if rows.numel():
            local = rows - start
            keys = key[b, :, start:end].to(compute)
            bias = _mean_bias(q[0, :, local].to(compute), keys, eligible - start, first, terms, scaling)
            sinks[:, local] += bias[..., :p]
        sink_values = v[0, :, :p].to(compute)  # [H, p, D]
        # Rows inside the prefix see only prefix keys: a causal softmax over them.
        head = sinks[:, :p].masked_fill(torch.ones(p, p, dtype=torch.bool, device=q.device).triu(1), float("-inf"))
        output[b, start : start + p] = torch.matmul(torch.softmax(head, -1), sink_values).transpose(0, 1).to(q.dtype)
        if end - start > p:
            rest, rest_lse = attention_with_lse(q[:, :, p:], k[:, :, p:], v[:, :, p:], scaling, causal=True)
            tail = sinks[:, p:]  # [H, n - p, p]
            lse = torch.logaddexp(rest_lse[0], torch.logsumexp(tail, dim=-1))
            combined = rest[0].to(compute) * torch.exp(rest_lse[0] - lse)[..., None]
            combined += torch.matmul(torch.exp(tail - lse[..., None]), sink_values)
            output[b, start + p : end] = combined.transpose(0, 1).to(query.dtype)
    return output


def merge_prefill(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    context: MergeContext,
    scaling: float,
    base_output: Callable[[], torch.Tensor],
) -> torch.Tensor:
    """The merge's attention at a prefill, ``[B, L, H, D]``: the log-sum-exp route where it applies, else the base
    kernel's output (``base_output()``) with the biased rows recomputed."""
    if context.lse_route():
        return merge_attention_lse(query, key, value, context, scaling)
    return merge_visual_rows(base_output(), query, key, value, context, scaling)
