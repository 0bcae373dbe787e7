"""Attention that also returns its log-sum-exp, from torch's own fused kernels: what lets attention over a set of keys
be split into parts and merged exactly (``out = sum_i exp(lse_i - lse) * out_i``), every term positive.

:func:`attention_with_lse` picks, by device and dtype, the SDPA kernel torch runs anyway (the CPU flash kernel; on
CUDA the flash kernel for half precision, the memory-efficient one otherwise) and falls back to a chunked
matmul-softmax where none applies. Shapes follow SDPA: ``[B, H, L, D]``, causal masks aligned top-left (query ``i``
sees keys ``0..i``; callers only ask for causal attention with as many queries as keys).
"""

from __future__ import annotations

import torch


def _widened(lse: torch.Tensor) -> torch.Tensor:
    return lse.to(torch.promote_types(lse.dtype, torch.float32))


def reference_attention_with_lse(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, scale: float, causal: bool, chunk: int = 1024
) -> tuple[torch.Tensor, torch.Tensor]:
    """The fallback and the tests' reference: fp32 (or wider) scores, ``chunk`` query rows at a time."""
    compute = torch.promote_types(query.dtype, torch.float32)
    k, v = key.to(compute), value.to(compute)
    outs, lses = [], []
    for start in range(0, query.shape[2], chunk):
        q = query[:, :, start : start + chunk].to(compute)
        scores = torch.matmul(q, k.transpose(-1, -2)) * scale
        if causal:
            rows = torch.arange(start, start + q.shape[2], device=q.device)[:, None]
            scores = scores.masked_fill(torch.arange(k.shape[2], device=q.device)[None, :] > rows, float("-inf"))
        lse = torch.logsumexp(scores, dim=-1)
        outs.append(torch.matmul(torch.exp(scores - lse[..., None]), v))
        lses.append(lse)
    return torch.cat(outs, dim=2).to(query.dtype), torch.cat(lses, dim=2)


def attention_with_lse(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, scale: float, causal: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(out [B, H, Lq, D] in the query's dtype, lse [B, H, Lq] float32 or wider)``; ``key``/``value`` have as
    many heads as ``query``. A causal call needs ``Lq == Lk``."""
    if causal and query.shape[2] != key.shape[2]:
        raise ValueError("causal attention with a log-sum-exp needs as many queries as keys")
    ops = torch.ops.aten
    try:
        if query.device.type == "cpu":
            out, lse = ops._scaled_dot_product_flash_attention_for_cpu(query, key, value, 0.0, causal, scale=scale)
            return out, _widened(lse)
        if query.device.type == "cuda" and query.dtype in (torch.float16, torch.bfloat16):
            result = ops._scaled_dot_product_flash_attention(query, key, value, 0.0, causal, False, scale=scale)
            return result[0], _widened(result[1])
        if query.device.type == "cuda":
            out, lse, *_ = ops._scaled_dot_product_efficient_attention(
                query, key, value, None, True, 0.0, causal, scale=scale
            )
            return out, _widened(lse[..., : query.shape[2]])
    except (RuntimeError, NotImplementedError):  # an op this build or shape does not support: the fallback below
        pass
    return reference_attention_with_lse(query, key, value, scale, causal)
