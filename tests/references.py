"""Independent references the tests hold the library to, written from the paper's table (REFERENCE section 1) and
the README, not from the library's code. One copy of each: every test module imports them from here.

* :data:`OPENS`: what each mode lets a query see beyond the causal mask, as a rule on (query visual, key visual);
* :func:`reference_mask`: a mode's mask on a causal model by a brute-force loop over that rule;
* :data:`EXPECTED`: each mode's mask on the prompt "text, image, image, text", written out by hand;
* :func:`merge_reference`: an attention function that runs the literal merge reference (steps 1-4 of
  :mod:`lmms_futuremask.attention.merge`) for a whole model, registered per test by the ``attention_backend`` fixture.
"""

from __future__ import annotations

import torch

from lmms_futuremask.attention.merge import MergeSettings, reference_merge_attention

#: mode -> whether a query may see a *later* key, from (query is visual, key is visual). The README's table.
OPENS = {
    "original": lambda qv, kv: False,
    "causal": lambda qv, kv: False,  # on a causal model, M^c itself; on other layers it removes later keys
    "future": lambda qv, kv: qv,
    "future_v2v": lambda qv, kv: qv and kv,
    "future_v2t": lambda qv, kv: qv and not kv,
    "mma": lambda qv, kv: qv != kv,
}


def reference_mask(is_visual, mode, attention_mask=None):
    """``[B, 1, L, L]`` bool: the mode's mask on a causal model, element by element. Padding keys are closed
    (``attention_mask`` 0); rows of padding queries follow the same rule."""
    batch, length = is_visual.shape
    out = torch.zeros(batch, 1, length, length, dtype=torch.bool)
    for b in range(batch):
        for i in range(length):
            for j in range(length):
                if attention_mask is not None and not attention_mask[b, j]:
                    continue
                out[b, 0, i, j] = j <= i or OPENS[mode](bool(is_visual[b, i]), bool(is_visual[b, j]))
    return out


#: The prompt "text, image, image, text" (positions 0-3) and each mode's mask on it: row = query, column = key.
LAYOUT = [False, True, True, False]
_CAUSAL = [[1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1]]
EXPECTED = {
    "original": _CAUSAL,
    "causal": _CAUSAL,
    # the image rows see every later key
    "future": [[1, 0, 0, 0], [1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 1, 1]],
    # the image rows see the later image keys only (row 1 sees key 2, not the text key 3)
    "future_v2v": [[1, 0, 0, 0], [1, 1, 1, 0], [1, 1, 1, 0], [1, 1, 1, 1]],
    # the image rows see the later text keys only (row 1 sees key 3, not the image key 2)
    "future_v2t": [[1, 0, 0, 0], [1, 1, 0, 1], [1, 1, 1, 1], [1, 1, 1, 1]],
    # text rows see later image keys, image rows see later text keys
    "mma": [[1, 1, 1, 0], [1, 1, 0, 1], [1, 1, 1, 1], [1, 1, 1, 1]],
}


def merge_reference(is_visual, mode: str, settings: MergeSettings, padding, natives=None):
    """An attention function for a stock model whose every prefill call runs the literal merge reference in
    float64 (decode steps: plain eager attention). ``natives``: each layer's own mask ``[B, 1, L, K]`` in call order
    (default: causal with padding keys closed)."""
    calls = []

    def attention(module, query, key, value, attention_mask, *args, scaling=None, **kwargs):
        import sys

        length = query.shape[2]
        if length == 1:
            eager = sys.modules[type(module).__module__].eager_attention_forward
            return eager(module, query, key, value, attention_mask, *args, scaling=scaling, **kwargs)
        native = None if natives is None else natives[len(calls) % len(natives)][:, 0, :, :length]
        calls.append(length)
        groups = query.shape[1] // key.shape[1]
        out = reference_merge_attention(
            query.double(),
            key.repeat_interleave(groups, 1)[:, :, :length].double(),
            value.repeat_interleave(groups, 1)[:, :, :length].double(),
            is_visual,
            mode,
            settings,
            padding,
            scaling if scaling is not None else module.scaling,
            native=native,
        )
        return out.to(query.dtype).transpose(1, 2).contiguous(), None

    attention.calls = calls
    return attention
