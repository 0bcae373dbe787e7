"""Pictures: deltas vs ``original`` (heatmap), the modes' mask patterns, and attention maps of one sample."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..attention.masks import MODES, build_mask


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def delta_grid(report):
    """``[variants except original, columns]`` float array of differences from ``original``; NaN where there is
    none (a column the variant or ``original`` did not report), never a made-up 0."""
    import numpy as np

    variants = [v for v in report.variants if v != "original"]
    deltas = [[report.cells[(v, t)].delta for t, _ in report.columns] for v in variants]
    return np.array([[np.nan if d is None else d for d in row] for row in deltas], dtype=float)


def delta_heatmap(report, path: str | Path) -> Path:
    """Variants x tasks, coloured by the difference from ``original`` (needs an ``original`` run). A cell without
    a difference (the variant or ``original`` did not report that column) stays blank, marked "–"; a cell not
    comparable with the reference run (``--allow-mismatch``) is marked "≠"."""
    import numpy as np

    from ..milebench.catalog import short_name

    plt = _pyplot()
    variants, columns = [v for v in report.variants if v != "original"], report.columns
    cells = [[report.cells[(v, t)] for t, _ in columns] for v in variants]
    grid = delta_grid(report)
    limit = max(float(np.nanmax(np.abs(grid))) if np.isfinite(grid).any() else 0.0, 1e-3)
    fig, ax = plt.subplots(figsize=(1.0 + 0.75 * len(columns), 1.2 + 0.45 * len(variants)))
    colours = plt.get_cmap("RdBu").with_extremes(bad="white")
    image = ax.imshow(np.ma.masked_invalid(grid), cmap=colours, vmin=-limit, vmax=limit, aspect="auto")
    ax.set_xticks(range(len(columns)), [short_name(t) for t, _ in columns], rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(variants)), variants, fontsize=8)
    for i, row in enumerate(cells):
        for j, cell in enumerate(row):
            if cell.delta is None:
                ax.text(j, i, "–", ha="center", va="center", fontsize=6, color="grey")
                continue
            colour = "white" if abs(cell.delta) > 0.6 * limit else "black"
            text = f"{cell.delta:+.3f}" + (" ≠" if cell.mismatch else "")
            ax.text(j, i, text, ha="center", va="center", fontsize=6, color=colour)
    fig.colorbar(image, ax=ax, label="difference from original")
    ax.set_title(f"{report.model}: score minus original (blank: not reported)")
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)
    return Path(path)


SAMPLE_LAYOUT = "TTTVVVVVTTVVVVVTTTT"  # text, an image, text, another image, the question


def mask_patterns(path: str | Path, layout: str = SAMPLE_LAYOUT) -> Path:
    """One panel per mode: which key (column) each query (row) may attend, drawn from :func:`build_mask`."""
    plt = _pyplot()
    is_visual = torch.tensor([[c == "V" for c in layout]])
    fig, axes = plt.subplots(1, len(MODES), figsize=(3.2 * len(MODES), 3.6))
    for ax, mode in zip(axes, MODES, strict=False):
        allowed = build_mask(is_visual, mode)[0, 0].int()
        colour = (
            allowed + (allowed.bool() & (torch.arange(len(layout))[None, :] > torch.arange(len(layout))[:, None])).int()
        )
        ax.imshow(colour, cmap=plt.matplotlib.colors.ListedColormap(["white", "#4a7ebb", "#e8853d"]), vmin=0, vmax=2)
        ax.set_xticks(range(len(layout)), list(layout), fontsize=6)
        ax.set_yticks(range(len(layout)), list(layout), fontsize=6)
        ax.set_title(mode)
    fig.suptitle("query rows x key columns; blue: causal, orange: future opened by the mode (V visual, T text)")
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)
    return Path(path)


@torch.inference_mode()
def attention_maps(model: Any, inputs: dict, modes: list[str], out_dir: str | Path, layer: int = -1) -> list[Path]:
    """Head-averaged attention of one layer for one prompt under each mode, saved as PNGs (eager attention)."""
    from ..attention.integration import disable, enable

    plt = _pyplot()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config = model.get_decoder().config
    backend, config._attn_implementation = config._attn_implementation, "eager"  # only eager returns weights
    image_id = model.config.image_token_id
    visual = (inputs["input_ids"][0] == image_id).nonzero().flatten().tolist()
    paths = []
    for mode in modes:
        enable(model, mode)
        try:
            attentions = model(**inputs, output_attentions=True).attentions
        finally:
            disable(model)
            config._attn_implementation = backend if mode == modes[-1] else "eager"
        weights = attentions[layer][0].float().mean(0)  # [L, L]
        fig, ax = plt.subplots(figsize=(5.5, 5))
        image = ax.imshow(weights.clamp(min=1e-6).log10(), cmap="magma")
        if visual:
            for edge in (visual[0] - 0.5, visual[-1] + 0.5):
                ax.axvline(edge, color="cyan", lw=0.5)
                ax.axhline(edge, color="cyan", lw=0.5)
        fig.colorbar(image, ax=ax, label="log10 attention (head mean)")
        ax.set_title(f"{mode}, layer {layer}: query rows x key columns")
        fig.tight_layout()
        path = out_dir / f"attention_{mode}_layer{layer}.png"
        fig.savefig(path, dpi=150)
        plt.close(fig)
        paths.append(path)
    return paths


def inspect_attention(
    pretrained: str,
    prompt: str,
    image_files: list[str],
    modes: list[str],
    out_dir: str | Path,
    layer: int = -1,
    device: str | None = None,
    dtype: str = "auto",
) -> list[Path]:
    """Load ``pretrained`` (eager attention, ``dtype`` on ``device``) and save :func:`attention_maps` of ``prompt``
    with ``image_files``. ``dtype="auto"``: bfloat16 on a GPU, float32 on the CPU."""
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from ..attention.masks import check_mode
    from ..runtime.model_args import default_device
    from ..validation import UserError

    try:
        for mode in modes:
            check_mode(mode)  # before the weights load
    except ValueError as error:
        raise UserError(f"--modes: {error}") from None
    device = default_device(device)
    if dtype == "auto":
        dtype = "bfloat16" if torch.device(device).type == "cuda" else "float32"
    processor = AutoProcessor.from_pretrained(pretrained)
    model = AutoModelForImageTextToText.from_pretrained(
        pretrained, attn_implementation="eager", dtype=getattr(torch, dtype)
    )
    model = model.to(device).eval()
    images = [Image.open(p).convert("RGB") for p in image_files]
    inputs = processor(text=[prompt], images=images or None, return_tensors="pt").to(device)
    return attention_maps(model, dict(inputs), modes, out_dir, layer=layer)
