"""Speed and memory of every variant at MileBench-like shapes: prefill, decode, end-to-end, peak memory.

Models are built from a config with random weights (no download): ``tiny`` (our test architecture with LLaVA-1.5's
336 px / 576-token images, for the CPU) or the real-size ``llava-1.5-7b`` / ``llava-1.5-13b`` architectures (for a
GPU, bf16). Timings are medians over repeats after a warm-up; ratios to ``original`` in the same run are the numbers
to compare across machines.
"""

from __future__ import annotations

import csv
import io
import platform
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from ..attention.integration import disable, enable
from ..attention.variants import parse_variant
from ..runtime.prompting import LLAVA_IMAGE_TOKENS as IMAGE_TOKENS
from ..testing.tiny import TINY_TEXT, TINY_VISION
from ..validation import unknown_choice

BENCH_VARIANTS = (
    "original",
    "future",
    "future_v2v",
    "future_v2t",
    "mma",
    "future+merge",
    "future_v2v+merge",
    "future_v2t+merge",
)
IMAGE_TOKEN_ID = 32000

#: CLIP ViT-L/14-336, LLaVA-1.5's vision tower at both sizes.
CLIP_L_336 = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16)

ARCHS: dict[str, dict[str, Any]] = {
    "tiny": {"vision": TINY_VISION, "text": TINY_TEXT},  # the test checkpoint's widths, at 336 px
    "llava-1.5-7b": {
        "vision": CLIP_L_336,
        "text": dict(
            hidden_size=4096,
            intermediate_size=11008,
            num_hidden_layers=32,
            num_attention_heads=32,
            num_key_value_heads=32,
        ),
    },
    "llava-1.5-13b": {
        "vision": CLIP_L_336,
        "text": dict(
            hidden_size=5120,
            intermediate_size=13824,
            num_hidden_layers=40,
            num_attention_heads=40,
            num_key_value_heads=40,
        ),
    },
}


def build_model(arch: str, dtype: torch.dtype, device: str, attn_implementation: str = "sdpa"):
    """A random-weight LLaVA-1.5-shaped model (CLIP 336 px, 576 tokens per image) on ``device``."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    if arch not in ARCHS:
        raise unknown_choice("arch", arch, ARCHS, noun="archs")
    spec = ARCHS[arch]
    vision = CLIPVisionConfig(image_size=336, patch_size=14, projection_dim=768, **spec["vision"])
    text = LlamaConfig(vocab_size=32064, max_position_embeddings=8192, **spec["text"])
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=IMAGE_TOKEN_ID,
        image_seq_length=IMAGE_TOKENS,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
    )
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = LlavaForConditionalGeneration(config)
    finally:
        torch.set_default_dtype(previous)
    model.config.text_config._attn_implementation = attn_implementation  # the decoder is what the modes change
    model.config.vision_config._attn_implementation = "sdpa"
    return model.eval()


def make_inputs(batch: int, n_images: int, text_tokens: int, device: str, dtype: torch.dtype) -> dict:
    """``[BOS, text/2, images, text/2]`` per row, random ids and pixels; all rows the same length."""
    gen = torch.Generator().manual_seed(1)
    half = text_tokens // 2
    rows = []
    for _ in range(batch):
        text_a = torch.randint(3, 30000, (half,), generator=gen)
        text_b = torch.randint(3, 30000, (text_tokens - half,), generator=gen)
        images = torch.full((n_images * IMAGE_TOKENS,), IMAGE_TOKEN_ID)
        rows.append(torch.cat([torch.tensor([1]), text_a, images, text_b]))
    input_ids = torch.stack(rows).to(device)
    pixels = torch.randn(batch * n_images, 3, 336, 336, generator=gen).to(device, dtype)
    return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "pixel_values": pixels}


@dataclass
class BenchRow:
    """One variant's figures at one shape (images per prompt, batch size)."""

    variant: str
    images: int
    batch: int
    prompt_tokens: int
    prefill_ms: float
    decode_ms_per_token: float
    tokens_per_s: float
    peak_mem_gib: float | None


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _timed(fn, device: str, repeats: int) -> float:
    """Median seconds of ``fn()`` over ``repeats`` runs, after one warm-up."""
    fn()
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _apply_variant(model, variant: str) -> None:
    disable(model)
    enable(model, *parse_variant(variant))


@torch.inference_mode()
def bench_one(model, variant: str, inputs: dict, new_tokens: int, device: str, repeats: int) -> BenchRow:
    """Time one variant on ``inputs``: prefill, decode steps and end-to-end, medians over ``repeats``."""
    _apply_variant(model, variant)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()

    def prefill():
        return model(**inputs, use_cache=True, logits_to_keep=1)  # as generate() does

    prefill_s = _timed(prefill, device, repeats)

    def decode() -> float:
        """Seconds for ``new_tokens`` greedy decode steps after a fresh (untimed) prefill."""
        out = prefill()
        cache, token, mask = out.past_key_values, out.logits[:, -1:].argmax(-1), inputs["attention_mask"]
        del out
        _sync(device)
        start = time.perf_counter()
        for _ in range(new_tokens):
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            step = model(input_ids=token, attention_mask=mask, past_key_values=cache, use_cache=True)
            cache, token = step.past_key_values, step.logits[:, -1:].argmax(-1)
        _sync(device)
        return time.perf_counter() - start

    decode()  # warm-up
    decode_s = statistics.median(decode() for _ in range(repeats))

    def end_to_end():
        model.generate(**inputs, do_sample=False, max_new_tokens=new_tokens, min_new_tokens=new_tokens)

    e2e_s = _timed(end_to_end, device, repeats)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else None
    batch = inputs["input_ids"].shape[0]
    return BenchRow(
        variant=variant,
        images=int((inputs["input_ids"][0] == IMAGE_TOKEN_ID).sum()) // IMAGE_TOKENS,
        batch=batch,
        prompt_tokens=inputs["input_ids"].shape[1],
        prefill_ms=prefill_s * 1000,
        decode_ms_per_token=decode_s * 1000 / new_tokens,
        tokens_per_s=batch * new_tokens / e2e_s,
        peak_mem_gib=peak,
    )


def run_bench(
    arch: str = "tiny",
    variants: tuple[str, ...] = BENCH_VARIANTS,
    images: tuple[int, ...] = (1, 4, 8),
    batches: tuple[int, ...] = (1, 8),
    text_tokens: int = 200,
    new_tokens: int = 32,
    repeats: int = 3,
    device: str | None = None,
    dtype: str = "auto",
    attn_implementation: str = "sdpa",
) -> tuple[list[BenchRow], int]:
    """Rows of every variant and shape, and the bytes of weights one decode step reads (decoder + LM head)."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if dtype == "auto":
        dtype = "bfloat16" if device.startswith("cuda") else "float32"
    torch_dtype = getattr(torch, dtype)
    model = build_model(arch, torch_dtype, device, attn_implementation)
    rows: list[BenchRow] = []
    for n_images in images:
        for batch in batches:
            inputs = make_inputs(batch, n_images, text_tokens, device, torch_dtype)
            for variant in variants:
                rows.append(bench_one(model, variant, inputs, new_tokens, device, repeats))
                print(format_rows(rows[-1:], header=len(rows) == 1), flush=True)
    decoder_params = [*model.get_decoder().parameters(), *model.lm_head.parameters()]
    return rows, sum(p.numel() * p.element_size() for p in decoder_params)


def _ratio(row: BenchRow, rows: list[BenchRow], field: str) -> float:
    base = next(r for r in rows if r.variant == "original" and r.images == row.images and r.batch == row.batch)
    return getattr(row, field) / getattr(base, field)


def format_rows(rows: list[BenchRow], header: bool = True, all_rows: list[BenchRow] | None = None) -> str:
    """Markdown rows; with ``all_rows``, prefill and decode also as ratios to ``original`` at the same shape."""
    lines = []
    if header:
        lines += [
            "| variant | images | batch | prompt tokens | prefill ms | x orig | decode ms/token | x orig | tokens/s "
            "| peak GiB |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
    for r in rows:
        has_base = all_rows is not None
        prefill_x = f"{_ratio(r, all_rows, 'prefill_ms'):.2f}" if has_base else ""
        decode_x = f"{_ratio(r, all_rows, 'decode_ms_per_token'):.2f}" if has_base else ""
        peak = "n/a" if r.peak_mem_gib is None else f"{r.peak_mem_gib:.1f}"
        lines.append(
            f"| {r.variant} | {r.images} | {r.batch} | {r.prompt_tokens} | {r.prefill_ms:.1f} | {prefill_x} | "
            f"{r.decode_ms_per_token:.2f} | {decode_x} | {r.tokens_per_s:.1f} | {peak} |"
        )
    return "\n".join(lines)


def environment() -> str:
    """The machine and library versions, for the record beside the figures."""
    import transformers

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor() or "CPU"
    versions = f"python {platform.python_version()}, torch {torch.__version__}, transformers {transformers.__version__}"
    return f"{device}; {torch.get_num_threads()} CPU threads; {versions}; {time.strftime('%Y-%m-%d')}"


#: HBM bandwidth in TB/s of the GPUs this project is measured on, for the batch-1 decode floor.
HBM_TBPS = {"H100": 3.35, "H200": 4.8}


def decode_floor(weight_bytes: int) -> str:
    """Batch-1 decode reads every weight once per token: weight bytes / HBM bandwidth is its lower bound."""
    name = torch.cuda.get_device_name() if torch.cuda.is_available() else ""
    tbps = next((v for k, v in HBM_TBPS.items() if k in name), None)
    size = f"weights {weight_bytes / 2**30:.1f} GiB"
    if tbps is None:
        return size
    return f"{size}; batch-1 decode floor at {tbps} TB/s: {weight_bytes / (tbps * 1e12) * 1e3:.2f} ms/token"


def write_outputs(
    rows: list[BenchRow], out_dir: str | Path, command: str, weight_bytes: int | None = None
) -> tuple[Path, Path]:
    """Write the rows as markdown and CSV (with the command and machine) under ``out_dir``; their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    markdown = out_dir / "bench.md"
    floor = f"\n\nModel: {decode_floor(weight_bytes)}" if weight_bytes else ""
    header = f"Machine: {environment()}{floor}\n\nCommand: `{command}`"
    markdown.write_text(f"{header}\n\n{format_rows(rows, all_rows=rows)}\n")
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(asdict(rows[0])))
    writer.writeheader()
    writer.writerows(asdict(r) for r in rows)
    table = out_dir / "bench.csv"
    table.write_text(buffer.getvalue())
    return markdown, table
