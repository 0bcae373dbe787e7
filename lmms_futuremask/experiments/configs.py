"""lmms-eval ``--config`` files and model_args presets for the paper's variants (and mma) on LLaVA-1.5 7B/13B.

The files under ``configs/`` are written by :func:`write_configs`; a test checks they match it.
"""

from __future__ import annotations

from pathlib import Path

from ..attention.variants import PAPER_VARIANTS, parse_variant, variant_model_args

MODELS = {"llava-1.5-7b": "llava-hf/llava-1.5-7b-hf", "llava-1.5-13b": "llava-hf/llava-1.5-13b-hf"}
VARIANTS = (*PAPER_VARIANTS, "mma")
COMMON_ARGS = "dtype=bfloat16,batch_size=8"


def paper_script(model: str, variant: str) -> str | None:
    """The paper repository's script for a variant (README "Script <-> method map"); None for mma."""
    mode, merge = parse_variant(variant)
    if mode == "mma":
        return None
    size = model.rsplit("-", 1)[-1]
    stem = mode + ("_kernel" if merge == "kernel" else "")
    return f"scripts/llava-v1.5-{size}/new_eval_{stem}_{size}.sh"


def file_stem(variant: str) -> str:
    return variant.replace("+", "_")


def preset(model: str, variant: str, pretrained: str | None = None) -> str:
    """The model_args string of one model and variant."""
    return f"pretrained={pretrained or MODELS[model]},{variant_model_args(variant)},{COMMON_ARGS}"


def config_text(model: str, variant: str, tasks: str = "milebench_paper", pretrained: str | None = None) -> str:
    out = f"runs/{model}/{file_stem(variant)}"
    script = paper_script(model, variant)
    origin = f"paper script {script}" if script else "not in the paper: generalised Modality-Mutual Attention"
    return (
        f"# {model}, {variant} ({origin})\n"
        f"# lmms-eval --config configs/{model}/{file_stem(variant)}.yaml\n"
        "model: llava_futuremask\n"
        f"model_args: {preset(model, variant, pretrained)},answer_cache={out}/answer_cache\n"
        f"tasks: {tasks}\n"
        f"output_path: {out}\n"
        "log_samples: true\n"
    )


def presets_text() -> str:
    lines = ["# model_args presets: <model>/<variant>: model_args (add them to --model_args)"]
    lines += [f'"{m}/{v}": "{preset(m, v)}"' for m in MODELS for v in VARIANTS]
    return "\n".join(lines) + "\n"


def write_configs(directory: str | Path) -> list[Path]:
    root = Path(directory)
    written = []
    for model in MODELS:
        (root / model).mkdir(parents=True, exist_ok=True)
        for variant in VARIANTS:
            path = root / model / f"{file_stem(variant)}.yaml"
            path.write_text(config_text(model, variant))
            written.append(path)
    (root / "presets.yaml").write_text(presets_text())
    return [*written, root / "presets.yaml"]
