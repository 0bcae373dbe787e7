"""The model_args of our lmms-eval models: one table, parsed and range-checked before anything heavy loads.

lmms-eval hands a model its ``--model_args`` as a dict whose values it has already guessed types for (``"8"`` ->
``8``, ``"2.5"`` -> ``2.5``, ``"-1"`` -> ``-1.0``, ``"true"`` -> ``True``), plus ``batch_size`` / ``max_batch_size`` /
``device`` from its own flags (``batch_size`` as a string there). :func:`parse_model_args` turns that into checked
values: an unknown key, a wrong type, a value out of range or a local checkpoint path that does not exist is a
:class:`ModelArgsError` that names the argument, its valid values and, for an unknown key, every model_arg there is.
It runs in the adapter's constructor before the weights (or even accelerate) load.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..attention.masks import MODES
from ..attention.merge import MERGES, POOLS, merge_settings
from ..validation import UserError, unknown_choice

#: Attention backends a model may be loaded with (every mode is exact on each; see the README).
ATTN_IMPLEMENTATIONS = ("sdpa", "eager", "flex_attention", "flash_attention_2", "flash_attention_3")
DTYPE_NAMES = ("auto", "bfloat16", "float16", "float32")
AUTOCAST_NAMES = ("none", "bfloat16", "float16")
ON_ERROR = ("record", "raise")
CACHE_IMPLEMENTATIONS = ("dynamic", "static")


#: model_args that choose how a run executes, not its answers (left out of answer-cache keys and of comparisons).
EXECUTION_ONLY = ("answer_cache", "batch_size", "device", "device_map", "on_error", "prefetch")
#: The merge knobs (None: the paper's defaults).
MERGE_OPTIONS = ("merge_pool", "merge_kernel", "merge_prefix")
#: model_args that make a run one variant or another (everything else must match for variants to be compared).
VARIANT_ARGS = ("mode", "merge", *MERGE_OPTIONS, "routing")


def split_model_args(text: str) -> dict[str, str]:
    """``"a=b,c=d"`` -> ``{"a": "b", "c": "d"}``, values kept as written (how run folders record model_args)."""
    return dict(part.split("=", 1) for part in text.split(",") if "=" in part)


class ModelArgsError(UserError):
    """A model_arg is unknown or has a value the model cannot take; the message says which and what would do."""


@dataclass(frozen=True)
class Arg:
    """One model_arg: its type (``str``, ``int``, ``bool``, ``choice``), default, and limits."""

    name: str
    kind: str
    default: Any
    help: str
    choices: tuple[str, ...] = ()
    minimum: int | None = None
    optional: bool = False  # None is a valid value (the default of optional args)
    noun: str = "values"  # what the choices are called in an error ("valid modes are: ...")


def _args(*args: Arg) -> dict[str, Arg]:
    return {a.name: a for a in args}


def _pretrained(default: str | None) -> Arg:
    return Arg("pretrained", "str", default, "HF model id or local checkpoint folder", optional=default is None)


#: The model_args both lmms-eval models take, with one meaning.
COMMON_ARGS: dict[str, Arg] = _args(
    Arg("revision", "str", "main", "hub revision (branch, tag or commit)"),
    Arg("trust_remote_code", "bool", False, "passed to from_pretrained"),
    Arg("mode", "choice", "original", "the mask mode", choices=MODES, noun="modes"),
    Arg("merge", "choice", "none", "light future-aware attention", choices=MERGES),
    Arg("merge_pool", "choice", None, "merge pooling (default mean)", choices=POOLS, optional=True),
    Arg("merge_kernel", "int", None, "merge smoothing kernel k (default 5)", minimum=1, optional=True),
    Arg("merge_prefix", "int", None, "merge prefix / sink columns p (default 1)", minimum=1, optional=True),
    Arg(
        "routing",
        "str",
        None,
        "routing.yaml (lmms-futuremask select): a variant per task; tasks not listed run mode/merge",
        optional=True,
    ),
    Arg("dtype", "choice", "auto", "weights dtype", choices=DTYPE_NAMES),
    Arg(
        "autocast",
        "choice",
        "none",
        "run under torch.autocast in this dtype (the paper: float16 weights, bfloat16 autocast)",
        choices=AUTOCAST_NAMES,
    ),
    Arg("device", "str", None, "device of a single-process run (default cuda if available)", optional=True),
    Arg("device_map", "str", None, "e.g. auto, to split a large model over the visible GPUs", optional=True),
    Arg("attn_implementation", "choice", "sdpa", "attention backend", choices=ATTN_IMPLEMENTATIONS),
    Arg("batch_size", "int", 1, "prompts per forward (left padded)", minimum=1),
    Arg("max_batch_size", "int", None, "only for --batch_size auto, which is not supported", optional=True),
    Arg("max_new_tokens", "int", None, "overrides the task's max_new_tokens", minimum=1, optional=True),
    Arg("on_error", "choice", "record", "what a failing sample does", choices=ON_ERROR),
    Arg(
        "prefetch",
        "int",
        None,
        "batches whose images are loaded ahead, in a thread, while the model runs (0: off; default 1 on a GPU, 0 "
        "on the CPU, where the model already uses every core)",
        minimum=0,
        optional=True,
    ),
    Arg("answer_cache", "str", None, "folder of the per-sample answer cache (resume)", optional=True),
    Arg(
        "cache_implementation",
        "choice",
        None,
        "static: a fixed-shape KV cache",
        choices=CACHE_IMPLEMENTATIONS,
        optional=True,
    ),
)

#: Every model_arg of ``llava_futuremask`` (the LLaVA-1.5 paper preset).
LLAVA_FUTUREMASK_ARGS: dict[str, Arg] = _args(
    _pretrained("llava-hf/llava-1.5-7b-hf"),
    *COMMON_ARGS.values(),
    Arg("conv_template", "choice", "auto", "conversation template", choices=(), noun="templates"),  # filled below
    Arg("milebench_context_len", "int", 4096, "MileBench context budget in tokens", minimum=1),
    Arg(
        "milebench_image_tokens",
        "int",
        None,
        "visual tokens one image costs (default: the model's)",
        minimum=1,
        optional=True,
    ),
    Arg("milebench_pad_square", "bool", True, "pad MileBench images to a square with the mean colour"),
)

#: Every model_arg of ``futuremask`` (any Hugging Face VLM, its own chat template).
FUTUREMASK_ARGS: dict[str, Arg] = _args(
    _pretrained(None),
    *COMMON_ARGS.values(),
    Arg(
        "milebench_context_len",
        "int",
        None,
        "MileBench context budget in tokens (default: the model's context length)",
        minimum=1,
        optional=True,
    ),
    Arg(
        "visual_token_ids",
        "str",
        None,
        "token ids that count as visual, joined by '+' (default: the config's)",
        optional=True,
    ),
    Arg("max_pixels", "int", None, "image processor max_pixels (Qwen-VL)", minimum=1, optional=True),
    Arg("min_pixels", "int", None, "image processor min_pixels (Qwen-VL)", minimum=1, optional=True),
    Arg(
        "processor_kwargs",
        "str",
        None,
        'more processor options as JSON, e.g. {"do_image_splitting": false}',
        optional=True,
    ),
    Arg("frames_as_video", "bool", False, "give a sample's images to a video-capable model as one video"),
    Arg("video_frames", "int", 8, "frames sampled from a video file", minimum=1),
    Arg("system_prompt", "str", None, "a system turn before every prompt", optional=True),
)


#: Our lmms-eval models and the model_args table each checks.
MODEL_ARGS: dict[str, dict[str, Arg]] = {"llava_futuremask": LLAVA_FUTUREMASK_ARGS, "futuremask": FUTUREMASK_ARGS}


def recorded_model_args(model: str, text: str) -> dict[str, str]:
    """The model_args a run recorded (``text``) with the defaults of ``model``'s table filled in, as lower-case text,
    so two runs can be compared key by key (``dtype=auto`` and no ``dtype`` are the same run)."""
    table = MODEL_ARGS.get(model, {})
    values = {name: arg.default for name, arg in table.items()} | split_model_args(text)
    return {name: str(value).lower() for name, value in values.items()}


def _conv_templates() -> tuple[str, ...]:
    from .prompting import CONV_TEMPLATES

    return ("auto", *CONV_TEMPLATES, "chat")


def _coerce(arg: Arg, value: Any) -> Any:
    """The value in the arg's type, or a ModelArgsError saying what the arg takes."""
    if value is None and arg.optional:
        return None
    if arg.kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise _bad(arg, value, "true or false")
    if arg.kind == "int":
        number = value
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            number = int(value)
        elif isinstance(value, float) and value.is_integer():
            number = int(value)
        if isinstance(number, bool) or not isinstance(number, int):
            raise _bad(arg, value, _int_rule(arg))
        if arg.minimum is not None and number < arg.minimum:
            raise _bad(arg, value, _int_rule(arg))
        return number
    text = str(value)
    if arg.kind == "choice" and text not in arg.choices:
        raise ModelArgsError(f"model_args: {unknown_choice(arg.name, value, arg.choices, arg.noun)} ({arg.help})")
    return text


def _int_rule(arg: Arg) -> str:
    return "an integer" + ("" if arg.minimum is None else f" >= {arg.minimum}")


def _bad(arg: Arg, value: Any, rule: str) -> ModelArgsError:
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # lmms-eval reads "-1" as -1.0: show what the user typed
    shown = value if isinstance(value, str) else repr(value)  # as the user typed it: batch_size=0, not '0'
    return ModelArgsError(f"model_args: {arg.name}={shown} is not valid; {arg.name} takes {rule} ({arg.help})")


def check_pretrained(value: str) -> str:
    """A local checkpoint folder must exist and hold a config.json; anything else shaped like a path is an error.

    ``org/name`` that is not a local folder is a hub id (transformers fetches it), unless a folder ``org`` exists
    here (then it is a local path whose last part is missing); an absolute path, ``./x``, ``~/x`` or ``a/b/c`` can
    only be a local folder.
    """
    path = Path(value).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelArgsError(f"model_args: pretrained={value!r} is a file; give the checkpoint folder")
        if not (path / "config.json").is_file():
            raise ModelArgsError(
                f"model_args: pretrained={value!r} has no config.json; give the folder save_pretrained() wrote"
            )
        return value
    looks_local = path.is_absolute() or value.startswith((".", "~")) or value.count("/") > 1 or "\\" in value
    looks_local = looks_local or (value.count("/") == 1 and path.parent.is_dir())  # ckpts/mine with ckpts/ here
    if looks_local:
        raise ModelArgsError(
            f"model_args: pretrained={value!r}: no such folder. Give an existing local checkpoint folder or a "
            "Hugging Face model id such as llava-hf/llava-1.5-7b-hf"
        )
    return value


def _token_ids(value: Any) -> tuple[int, ...]:
    parts = str(value).replace(";", "+").split("+")
    if not all(p.strip().isdigit() for p in parts):
        raise ModelArgsError(
            f"model_args: visual_token_ids={value!r} is not valid; give ids joined by '+', e.g. 151655+151656"
        )
    return tuple(int(p) for p in parts)


def _json_object(value: Any) -> dict[str, Any]:
    import json

    try:
        parsed = json.loads(value) if isinstance(value, str) else value
    except json.JSONDecodeError as error:
        raise ModelArgsError(
            f'model_args: processor_kwargs is not valid JSON ({error}); e.g. {{"max_pixels": 1003520}}'
        ) from None
    if not isinstance(parsed, dict):
        raise ModelArgsError('model_args: processor_kwargs must be a JSON object, e.g. {"max_pixels": 1003520}')
    return parsed


def parse_model_args(raw: Mapping[str, Any], table: Mapping[str, Arg] = LLAVA_FUTUREMASK_ARGS) -> dict[str, Any]:
    """Checked model_args: every key of ``table`` with its value or default. Raises :class:`ModelArgsError`."""
    unknown = sorted(set(raw) - set(table))
    if unknown:
        raise ModelArgsError(
            f"model_args: unknown argument(s) {', '.join(unknown)}; valid model_args are: {', '.join(table)}"
        )
    if str(raw.get("batch_size", "")).startswith("auto"):
        raise ModelArgsError("model_args: batch_size=auto is not supported; give a number, e.g. --batch_size 8")
    values: dict[str, Any] = {}
    for name, arg in table.items():
        if name == "conv_template":
            arg = Arg(**{**arg.__dict__, "choices": _conv_templates()})
        values[name] = _coerce(arg, raw[name]) if name in raw else arg.default
    if values.get("max_batch_size") is not None:
        raise ModelArgsError(
            "model_args: max_batch_size only applies to --batch_size auto, which is not supported; "
            "drop it and give batch_size=N"
        )
    if values["pretrained"] is None:
        raise ModelArgsError("model_args: pretrained is required, e.g. pretrained=Qwen/Qwen2.5-VL-7B-Instruct")
    values["pretrained"] = check_pretrained(values["pretrained"])
    if values.get("visual_token_ids") is not None:
        values["visual_token_ids"] = _token_ids(values["visual_token_ids"])
    if values.get("processor_kwargs") is not None:
        values["processor_kwargs"] = _json_object(values["processor_kwargs"])
    merge_options = {k: values[k] for k in MERGE_OPTIONS if values.get(k) is not None}
    try:
        merge_settings(values["merge"], values["mode"], merge_options)
    except ValueError as error:
        raise ModelArgsError(f"model_args: {error}") from None
    check_autocast(values["dtype"], values["autocast"], values["device"])
    return values


def default_device(device: str | None) -> str:
    """``device`` as given, else ``cuda`` where a GPU is visible and ``cpu`` otherwise (the ``device`` default)."""
    if device:
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def check_autocast(dtype: str, autocast: str, device: str | None) -> None:
    """float16 weights under bfloat16 autocast (the paper's GPU setting) do not run on the CPU: torch's CPU autocast
    cannot mix the two (``Unexpected floating ScalarType in at::autocast::prioritize`` in the vision tower)."""
    if dtype != "float16" or autocast != "bfloat16":
        return
    if default_device(device).startswith("cpu"):
        raise ModelArgsError(
            "model_args: dtype=float16 with autocast=bfloat16 (the paper's GPU setting) does not run on the CPU; "
            "on the CPU use dtype=float32,autocast=bfloat16 or dtype=bfloat16,autocast=none"
        )
