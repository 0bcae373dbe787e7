"""Speed and memory of every variant at MileBench-like shapes: prefill, decode, tokens/s, peak memory.

Models are built from a config with random weights (no download): ``tiny`` (our test architecture, hidden 64: it
measures attention alone, since nothing else costs anything at that width) or the ``llava-1.5-7b`` /
``llava-1.5-13b`` architectures. On the CPU, use the real widths with a few decoder layers (``layers``) and a small
vision tower (``vision="small"``): every decoder layer costs the same, so per-layer ratios hold for the full depth,
and the vision tower is the same code for every variant. On a GPU, run them at full size in bf16.

Variants are interleaved: each round times every variant once (prefill, then ``new_tokens`` decode steps through its
cache), in an order rotated from round to round, so drift of the machine (thermal, allocator, other jobs) falls on
every variant alike. A ratio to ``original`` is taken within each round; the table shows their median and spread.
"""

from __future__ import annotations

import csv
import io
import platform
import statistics
import time
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from ..attention.integration import disable, enable
from ..attention.variants import parse_variant
from ..runtime.model_args import default_device
from ..runtime.prompting import LLAVA_IMAGE_TOKENS as IMAGE_TOKENS
from ..testing.tiny import TINY_TEXT, TINY_VISION
from ..validation import check_choice, unknown_choice

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


VISION_TOWERS = ("full", "small")


def build_model(
    arch: str,
    dtype: torch.dtype,
    device: str,
    attn_implementation: str = "sdpa",
    layers: int | None = None,
    vision: str = "full",
    vocab_size: int = 32064,
    image_token_id: int = IMAGE_TOKEN_ID,
):
    """A random-weight LLaVA-1.5-shaped model (CLIP 336 px, 576 tokens per image) on ``device``; ``layers`` decoder
    layers instead of the architecture's, the tiny CLIP widths with ``vision="small"``."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    if arch not in ARCHS:
        raise unknown_choice("arch", arch, ARCHS, noun="archs")
    check_choice("vision", vision, VISION_TOWERS)
    spec = ARCHS[arch]
    vision_spec = TINY_VISION if vision == "small" else spec["vision"]
    text_spec = {**spec["text"], **({"num_hidden_layers": layers} if layers else {})}
    vision_config = CLIPVisionConfig(image_size=336, patch_size=14, projection_dim=768, **vision_spec)
    text = LlamaConfig(vocab_size=vocab_size, max_position_embeddings=8192, **text_spec)
    config = LlavaConfig(
        vision_config=vision_config,
        text_config=text,
        image_token_id=image_token_id,
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
    """Per row ``[BOS, text, image, text, image, ..., text]``: the text split evenly around the images, as MileBench
    interleaves them; random ids and pixels; all rows the same length."""
    gen = torch.Generator().manual_seed(1)
    pieces = [text_tokens // (n_images + 1)] * (n_images + 1)
    pieces[-1] += text_tokens - sum(pieces)
    rows = []
    for _ in range(batch):
        parts = [torch.tensor([1])]
        for index, length in enumerate(pieces):
            parts.append(torch.randint(3, 30000, (length,), generator=gen))
            if index < n_images:
                parts.append(torch.full((IMAGE_TOKENS,), IMAGE_TOKEN_ID))
        rows.append(torch.cat(parts))
    input_ids = torch.stack(rows).to(device)
    pixels = torch.randn(batch * n_images, 3, 336, 336, generator=gen).to(device, dtype)
    return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "pixel_values": pixels}


@dataclass
class BenchRow:
    """One variant's figures at one shape (images per prompt, batch size): medians over the rounds, and the
    median, lowest and highest of its per-round ratios to ``original``, in wall time and (on the CPU) in this
    process's CPU time, which time stolen by other jobs on a shared machine does not inflate."""

    variant: str
    images: int
    batch: int
    prompt_tokens: int
    rounds: int
    prefill_ms: float
    prefill_x: float
    prefill_x_low: float
    prefill_x_high: float
    decode_ms_per_token: float
    decode_x: float
    decode_x_low: float
    decode_x_high: float
    tokens_per_s: float
    peak_mem_gib: float | None
    attention_ms: float = 0.0
    attention_extra: float = 0.0
    prefill_cpu_x: float | None = None
    prefill_cpu_x_low: float | None = None
    prefill_cpu_x_high: float | None = None
    decode_cpu_x: float | None = None
    decode_cpu_x_low: float | None = None
    decode_cpu_x_high: float | None = None


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


@dataclass
class _Timing:
    prefill_s: float
    decode_s: float
    peak_gib: float | None
    prefill_cpu_s: float = 0.0
    decode_cpu_s: float = 0.0
    attention_s: float = 0.0  # of the prefill, in the decoder's self-attention modules


class _AttentionClock:
    """Wall time spent inside the decoder layers' self-attention modules (projections included: the same for every
    variant, so the difference between variants is the mask's, merge's or segments' own cost)."""

    def __init__(self, model, device: str) -> None:
        self.device, self.seconds, self._start, self._handles = device, 0.0, 0.0, []
        for layer in model.get_decoder().layers:
            self._handles.append(layer.self_attn.register_forward_pre_hook(self._enter))
            self._handles.append(layer.self_attn.register_forward_hook(self._leave))

    def _enter(self, *_args) -> None:
        _sync(self.device)
        self._start = time.perf_counter()

    def _leave(self, *_args) -> None:
        _sync(self.device)
        self.seconds += time.perf_counter() - self._start

    def stop(self) -> float:
        for handle in self._handles:
            handle.remove()
        return self.seconds


@torch.inference_mode()
def time_variant(model, variant: str, inputs: dict, new_tokens: int, device: str) -> _Timing:
    """One prefill as ``generate()`` runs it (``logits_to_keep=1``), then ``new_tokens`` greedy decode steps through
    its cache; seconds of each, and the peak GPU memory of both."""
    disable(model)
    enable(model, *parse_variant(variant))
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    clock = _AttentionClock(model, device)
    _sync(device)
    start, cpu = time.perf_counter(), time.process_time()
    out = model(**inputs, use_cache=True, logits_to_keep=1)
    _sync(device)
    prefill_s, prefill_cpu_s = time.perf_counter() - start, time.process_time() - cpu
    attention_s = clock.stop()
    cache, token, mask = out.past_key_values, out.logits[:, -1:].argmax(-1), inputs["attention_mask"]
    del out
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(new_tokens):
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        step = model(input_ids=token, attention_mask=mask, past_key_values=cache, use_cache=True)
        cache, token = step.past_key_values, step.logits[:, -1:].argmax(-1)
    _sync(device)
    decode_s, decode_cpu_s = time.perf_counter() - start, time.process_time() - cpu
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else None
    return _Timing(prefill_s, decode_s, peak, prefill_cpu_s, decode_cpu_s, attention_s)


def _spread(ratios: list[float]) -> tuple[float, float, float]:
    """``(median, lowest, highest)`` of per-round ratios."""
    return statistics.median(ratios), min(ratios), max(ratios)


def bench_shape(
    model, variants: tuple[str, ...], inputs: dict, new_tokens: int, device: str, rounds: int
) -> list[BenchRow]:
    """Every variant at one shape: a warm-up round, then ``rounds`` interleaved rounds (order rotated each round)."""
    for variant in variants:
        time_variant(model, variant, inputs, min(new_tokens, 2), device)
    timings: dict[str, list[_Timing]] = {v: [] for v in variants}
    for r in range(rounds):
        for variant in variants[r % len(variants) :] + variants[: r % len(variants)]:
            timings[variant].append(time_variant(model, variant, inputs, new_tokens, device))
    base = timings["original"]
    batch, length = inputs["input_ids"].shape
    rows = []
    for variant, runs in timings.items():
        pairs = list(zip(runs, base, strict=True))
        prefill_x = _spread([t.prefill_s / b.prefill_s for t, b in pairs])
        decode_x = _spread([t.decode_s / b.decode_s for t, b in pairs])
        cpu: dict[str, float] = {}
        if not device.startswith("cuda"):  # a GPU run's CPU time is the host waiting
            for name, values in (
                ("prefill_cpu_x", _spread([t.prefill_cpu_s / b.prefill_cpu_s for t, b in pairs])),
                ("decode_cpu_x", _spread([t.decode_cpu_s / b.decode_cpu_s for t, b in pairs])),
            ):
                cpu |= {name: values[0], f"{name}_low": values[1], f"{name}_high": values[2]}
        prefill_s = statistics.median(t.prefill_s for t in runs)
        decode_s = statistics.median(t.decode_s for t in runs)
        # The attention's extra time in each round, over that round's whole original prefill.
        extra = statistics.median((t.attention_s - b.attention_s) / b.prefill_s for t, b in pairs)
        peaks = [t.peak_gib for t in runs if t.peak_gib is not None]
        rows.append(
            BenchRow(
                variant=variant,
                images=int((inputs["input_ids"][0] == IMAGE_TOKEN_ID).sum()) // IMAGE_TOKENS,
                batch=batch,
                prompt_tokens=length,
                rounds=rounds,
                prefill_ms=prefill_s * 1000,
                prefill_x=prefill_x[0],
                prefill_x_low=prefill_x[1],
                prefill_x_high=prefill_x[2],
                decode_ms_per_token=decode_s * 1000 / new_tokens,
                decode_x=decode_x[0],
                decode_x_low=decode_x[1],
                decode_x_high=decode_x[2],
                tokens_per_s=batch * new_tokens / (prefill_s + decode_s),
                peak_mem_gib=max(peaks) if peaks else None,
                attention_ms=statistics.median(t.attention_s for t in runs) * 1000,
                attention_extra=extra,
                **cpu,
            )
        )
    return rows


def check_bench_variants(variants: tuple[str, ...]) -> tuple[str, ...]:
    """Validate the variant names (before any model is built); ``original`` is always timed, first, as the base."""
    for variant in variants:
        parse_variant(variant)
    return ("original", *(v for v in dict.fromkeys(variants) if v != "original"))


def _machine_defaults(device: str | None, dtype: str = "auto", vision: str = "auto") -> tuple[str, torch.dtype, str]:
    """``(device, torch dtype, vision tower)`` with the ``auto`` choices made: cuda if available; bf16 and the
    architecture's tower on a GPU, fp32 and the small tower on the CPU."""
    check_choice("vision", vision, ("auto", *VISION_TOWERS))
    device = default_device(device)
    on_gpu = device.startswith("cuda")
    if dtype == "auto":
        dtype = "bfloat16" if on_gpu else "float32"
    if vision == "auto":
        vision = "full" if on_gpu else "small"
    return device, getattr(torch, dtype), vision


def run_bench(
    arch: str = "tiny",
    variants: tuple[str, ...] = BENCH_VARIANTS,
    images: tuple[int, ...] = (1, 4, 8),
    batches: tuple[int, ...] = (1, 8),
    text_tokens: int = 200,
    new_tokens: int = 64,
    repeats: int = 3,
    device: str | None = None,
    dtype: str = "auto",
    attn_implementation: str = "sdpa",
    layers: int | None = None,
    vision: str = "auto",
) -> tuple[list[BenchRow], int]:
    """Rows of every variant and shape (``repeats`` interleaved rounds each), and the bytes of weights one decode
    step reads (decoder + LM head). ``vision="auto"``: the small tower on the CPU, the architecture's on a GPU."""
    variants = check_bench_variants(variants)
    if new_tokens < 1 or repeats < 1 or (layers is not None and layers < 1):
        raise ValueError("new_tokens, repeats and layers must be >= 1")
    device, torch_dtype, vision = _machine_defaults(device, dtype, vision)
    model = build_model(arch, torch_dtype, device, attn_implementation, layers=layers, vision=vision)
    rows: list[BenchRow] = []
    for n_images in images:
        for batch in batches:
            inputs = make_inputs(batch, n_images, text_tokens, device, torch_dtype)
            shape_rows = bench_shape(model, variants, inputs, new_tokens, device, repeats)
            print(format_rows(shape_rows, header=not rows), flush=True)
            rows += shape_rows
    decoder_params = [*model.get_decoder().parameters(), *model.lm_head.parameters()]
    return rows, sum(p.numel() * p.element_size() for p in decoder_params)


def _ratio(median: float | None, low: float | None, high: float | None) -> str:
    return "n/a" if median is None else f"{median:.3f} ({low:.2f}-{high:.2f})"


def format_rows(rows: list[BenchRow], header: bool = True) -> str:
    """Markdown rows: medians, and ratios to ``original`` as the median (lowest-highest) of the per-round ratios, in
    wall time and in CPU time (CPU runs)."""
    lines = []
    if header:
        lines += [
            "| variant | images | batch | prompt tokens | prefill ms | prefill x orig (wall) "
            "| prefill x orig (CPU time) | attention ms | attention extra / prefill | decode ms/token "
            "| decode x orig (wall) | decode x orig (CPU time) | tokens/s | peak GiB |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
    for r in rows:
        peak = "n/a" if r.peak_mem_gib is None else f"{r.peak_mem_gib:.1f}"
        lines.append(
            f"| {r.variant} | {r.images} | {r.batch} | {r.prompt_tokens} | {r.prefill_ms:.1f} | "
            f"{_ratio(r.prefill_x, r.prefill_x_low, r.prefill_x_high)} | "
            f"{_ratio(r.prefill_cpu_x, r.prefill_cpu_x_low, r.prefill_cpu_x_high)} | {r.attention_ms:.1f} | "
            f"{r.attention_extra:+.1%} | {r.decode_ms_per_token:.2f} | "
            f"{_ratio(r.decode_x, r.decode_x_low, r.decode_x_high)} | "
            f"{_ratio(r.decode_cpu_x, r.decode_cpu_x_low, r.decode_cpu_x_high)} | {r.tokens_per_s:.1f} | {peak} |"
        )
    return "\n".join(lines)


def paper_table6() -> list[dict[str, str]]:
    """The paper's Table 6 (decode ms/token of LLaVA-1.5-7B per mask, without and with merge), as shipped."""
    text = resources.files("lmms_futuremask").joinpath("data/paper_table6_latency.csv").read_text()
    return list(csv.DictReader(io.StringIO(text)))


def table6_comparison(rows: list[BenchRow]) -> str:
    """Our decode ms/token beside the paper's Table 6, at the run's largest batch-1 shape (empty without one)."""
    batch1 = [r for r in rows if r.batch == 1]
    if not batch1:
        return ""
    images = max(r.images for r in batch1)
    ours = {r.variant: r for r in batch1 if r.images == images}
    lines = [
        f"Decode beside the paper's Table 6 (its LLaVA-1.5-7B, GPU not stated; ours: this run, {images} image(s), "
        "batch 1):",
        "",
        "| mask | paper: no merge | paper: +merge | paper speed-up | ours: no merge (x orig) | ours: +merge (x orig) |",
        "|---|---|---|---|---|---|",
    ]
    for entry in paper_table6():
        mask = entry["mask"]
        cells = []
        for variant in (mask, f"{mask}+merge"):
            r = ours.get(variant)
            cells.append("not run" if r is None else f"{r.decode_ms_per_token:.2f} ms ({r.decode_x:.3f}x)")
        lines.append(
            f"| {mask} | {entry['no_merge_ms_per_token']} ms | {entry['merge_ms_per_token']} ms | "
            f"{entry['speedup']}x | {cells[0]} | {cells[1]} |"
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
    comparison = table6_comparison(rows)
    markdown.write_text(f"{header}\n\n{format_rows(rows)}\n" + (f"\n{comparison}\n" if comparison else ""))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(asdict(rows[0])))
    writer.writeheader()
    writer.writerows(asdict(r) for r in rows)
    table = out_dir / "bench.csv"
    table.write_text(buffer.getvalue())
    return markdown, table


# -- image loading: its share of the wall time, with and without prefetching -----------------------------------------


@dataclass
class LoadingRow:
    """One runner pass over MileBench samples: wall time, time spent loading samples (opening, padding, resizing
    and normalising their images, tokenising; in either thread) and the part of it the model's thread waited for."""

    prefetch: int
    samples: int
    images_per_sample: int
    batch: int
    wall_s: float
    load_s: float
    load_wait_s: float


def _milebench_requests(docs: list[dict], protocol: Any, settings: Any) -> list:
    from ..milebench.prompt import full_prompt
    from ..runtime.runner import Request

    def loader(doc, where):
        return lambda: (protocol.sample(doc, where), None)

    return [
        Request(
            "generate",
            doc["milebench_task"],
            i,
            full_prompt(doc),
            None,
            loader(doc, f"doc {i}"),
            n_images=len(doc["images"]),
            settings=settings,
        )
        for i, doc in enumerate(docs)
    ]


def loading_bench(
    arch: str = "tiny",
    layers: int | None = None,
    samples: int = 16,
    image_size: tuple[int, int] = (800, 600),
    batch: int = 1,
    new_tokens: int = 8,
    prefetch: tuple[int, ...] = (0, 1),
    rounds: int = 2,
    device: str | None = None,
    work_dir: str | Path | None = None,
) -> list[LoadingRow]:
    """Run ``samples`` synthetic MileBench samples of 7 images (``image_size`` noise, LLaVA-1.5's pipeline: pad to
    square, bicubic resize to 336 px, normalise) through the runner once per ``prefetch`` value and round,
    interleaved, on a random-weight model of ``arch`` in fp32 (the tiny one by default: a fast model, where
    loading weighs most)."""
    import tempfile

    from transformers import CLIPImageProcessor, LlavaProcessor

    from ..milebench.catalog import TASKS
    from ..milebench.data import load_docs
    from ..milebench.fake import write_fake_milebench
    from ..milebench.llava import LlavaProtocol
    from ..milebench.prompt import ProtocolSettings
    from ..runtime.runner import Runner
    from ..runtime.vlm import VLM, GenerationSettings
    from ..testing.tiny import build_tokenizer

    device, dtype, vision = _machine_defaults(device)
    tokenizer = build_tokenizer()
    image_processor = CLIPImageProcessor(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336})
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=14,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
    )
    image_id = tokenizer.convert_tokens_to_ids("<image>")
    model = build_model(
        arch, dtype, device, layers=layers, vision=vision, vocab_size=len(tokenizer), image_token_id=image_id
    )
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    vlm = VLM(model, processor)
    protocol = LlavaProtocol.for_model(model, processor, ProtocolSettings(), "llava_llama_2")
    settings = GenerationSettings(max_new_tokens=new_tokens, min_new_tokens=new_tokens)
    folder = TASKS[0].folder  # a regular task: every third sample has 7 images
    with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
        root = write_fake_milebench(tmp, samples_per_task=3 * samples, image_size=image_size, folders=[folder])
        docs = [d for d in load_docs(folder, root) if len(d["images"]) == 7][:samples]
        requests = _milebench_requests(docs, protocol, settings)
        Runner(vlm, batch_size=batch, show_progress=False, prefetch=0).generate(requests[:batch])  # warm-up
        rows = []
        for r in range(rounds):
            for ahead in prefetch if r % 2 == 0 else prefetch[::-1]:
                runner = Runner(vlm, batch_size=batch, show_progress=False, prefetch=ahead)
                start = time.perf_counter()
                runner.generate(requests)
                wall = time.perf_counter() - start
                rows.append(LoadingRow(ahead, len(docs), 7, batch, wall, runner.load_seconds, runner.load_wait_seconds))
    return rows


def format_loading(rows: list[LoadingRow]) -> str:
    """Markdown: per prefetch setting, the medians over rounds of wall time, loading time and its share of the wall
    time, and the share the model's thread spent waiting for images (what prefetching removes)."""
    lines = [
        "| prefetch | samples x images | batch | rounds | wall s | loading s | loading / wall "
        "| waited for loading / wall |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for ahead in dict.fromkeys(r.prefetch for r in rows):
        runs = [r for r in rows if r.prefetch == ahead]
        wall = statistics.median(r.wall_s for r in runs)
        load = statistics.median(r.load_s for r in runs)
        wait = statistics.median(r.load_wait_s / r.wall_s for r in runs)
        first = runs[0]
        lines.append(
            f"| {ahead} | {first.samples} x {first.images_per_sample} | {first.batch} | {len(runs)} | {wall:.2f} | "
            f"{load:.2f} | {statistics.median(r.load_s / r.wall_s for r in runs):.1%} | {wait:.1%} |"
        )
    return "\n".join(lines)
