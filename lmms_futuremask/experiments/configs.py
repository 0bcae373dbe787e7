"""lmms-eval ``--config`` files and model_args presets: the paper's variants (and mma) per model, for the paper's
LLaVA-1.5 (``llava_futuremask``) and current VLMs (``futuremask``).

The files under ``configs/`` are written by :func:`write_configs`; a test checks they match it. Each paper model also
gets an ``exact/`` profile: the settings closest to the paper's own runs (float16 weights under bfloat16 autocast,
one sample at a time), slower than the default profile (bfloat16, batches of 8) whose greedy answers may differ on
borderline tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..attention.variants import PAPER_VARIANTS, parse_variant, variant_model_args

VARIANTS = (*PAPER_VARIANTS, "mma")
COMMON_ARGS = "dtype=bfloat16,batch_size=8"
#: The paper's runs: MileBench's LLaVA worker loads float16 weights and generates under bfloat16 autocast, batch 1.
EXACT_ARGS = "dtype=float16,autocast=bfloat16,batch_size=1"


@dataclass(frozen=True)
class ModelPreset:
    """A model the configs cover: its short name, lmms-eval model, checkpoint and variants."""

    key: str
    model: str
    pretrained: str
    variants: tuple[str, ...] = VARIANTS
    paper: bool = False  # the paper's own model: paper scripts map to it, and it has the ``exact`` profile


PRESETS: tuple[ModelPreset, ...] = (
    ModelPreset("llava-1.5-7b", "llava_futuremask", "llava-hf/llava-1.5-7b-hf", paper=True),
    ModelPreset("llava-1.5-13b", "llava_futuremask", "llava-hf/llava-1.5-13b-hf", paper=True),
    ModelPreset("qwen2.5-vl-7b", "futuremask", "Qwen/Qwen2.5-VL-7B-Instruct"),
    ModelPreset("llava-onevision-7b", "futuremask", "llava-hf/llava-onevision-qwen2-7b-ov-hf"),
    ModelPreset("internvl3-8b", "futuremask", "OpenGVLab/InternVL3-8B-hf"),
    # Gemma 3's images attend each other both ways: `causal` is its M^c baseline.
    ModelPreset("gemma-3-4b", "futuremask", "google/gemma-3-4b-it", variants=(*VARIANTS, "causal")),
)
MODELS = {p.key: p.pretrained for p in PRESETS}
BY_KEY = {p.key: p for p in PRESETS}
PROFILES = {"": COMMON_ARGS, "exact": EXACT_ARGS}


def paper_script(model: str, variant: str) -> str | None:
    """The paper repository's script for a variant (README "Script <-> method map"); None where it has none."""
    mode, merge = parse_variant(variant)
    if mode not in ("future", "future_v2v", "future_v2t", "original") or not BY_KEY[model].paper:
        return None
    size = model.rsplit("-", 1)[-1]
    stem = mode + ("_kernel" if merge == "kernel" else "")
    return f"scripts/llava-v1.5-{size}/new_eval_{stem}_{size}.sh"


def file_stem(variant: str) -> str:
    """``future_v2v+merge`` -> ``future_v2v_merge`` (a file name)."""
    return variant.replace("+", "_")


def preset(model: str, variant: str, pretrained: str | None = None, profile: str = "") -> str:
    """The model_args string of one model, variant and profile."""
    return f"pretrained={pretrained or MODELS[model]},{variant_model_args(variant)},{PROFILES[profile]}"


def _folder(model: str, profile: str) -> str:
    return f"{model}/{profile}" if profile else model


def config_text(
    model: str, variant: str, tasks: str = "milebench_paper", pretrained: str | None = None, profile: str = ""
) -> str:
    """The ``--config`` YAML of one model, variant and profile."""
    folder = _folder(model, profile)
    out = f"runs/{folder}/{file_stem(variant)}"
    script = paper_script(model, variant)
    origin = f"paper script {script}" if script else "not in the paper"
    if parse_variant(variant)[0] == "mma":
        origin += ": generalised Modality-Mutual Attention"
    elif parse_variant(variant)[0] == "causal":
        origin += ": strictly causal, the model's own bidirectional parts removed"
    if profile == "exact":
        origin += "; the paper's precision and batch size"
    return (
        f"# {model}, {variant} ({origin})\n"
        f"# lmms-eval --config configs/{folder}/{file_stem(variant)}.yaml\n"
        f"model: {BY_KEY[model].model}\n"
        f"model_args: {preset(model, variant, pretrained, profile)},answer_cache={out}/answer_cache\n"
        f"tasks: {tasks}\n"
        f"output_path: {out}\n"
        "log_samples: true\n"
    )


def _profiles(model: str) -> list[str]:
    return list(PROFILES) if BY_KEY[model].paper else [""]


def presets_text() -> str:
    """``configs/presets.yaml``: ``<model>[/<profile>]/<variant>: model_args``."""
    lines = ["# model_args presets: <model>[/<profile>]/<variant>: model_args (add them to --model_args)"]
    for p in PRESETS:
        for profile in _profiles(p.key):
            lines += [f'"{_folder(p.key, profile)}/{v}": "{preset(p.key, v, profile=profile)}"' for v in p.variants]
    return "\n".join(lines) + "\n"


def write_configs(directory: str | Path) -> list[Path]:
    """Write every config file and ``presets.yaml`` under ``directory``; returns their paths."""
    root = Path(directory)
    written = []
    for p in PRESETS:
        for profile in _profiles(p.key):
            (root / _folder(p.key, profile)).mkdir(parents=True, exist_ok=True)
            for variant in p.variants:
                path = root / _folder(p.key, profile) / f"{file_stem(variant)}.yaml"
                path.write_text(config_text(p.key, variant, profile=profile))
                written.append(path)
    (root / "presets.yaml").write_text(presets_text())
    return [*written, root / "presets.yaml"]
