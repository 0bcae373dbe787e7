"""model_args are checked before anything heavy loads: a wrong value names the argument, its valid values and
the fix; lmms-eval's injected flags too; a bad run writes no results."""

import os
import sys
from pathlib import Path

import pytest

from lmms_futuremask.experiments.evalrun import OFFLINE_ENV
from lmms_futuremask.runtime.model_args import ModelArgsError, parse_model_args

from ..helpers import lmms_eval_cli

BIN = Path(sys.executable).parent
ENV = {**os.environ, **OFFLINE_ENV}


# -- 1. model_args checked before anything heavy ----------------------------------------------------------------------

BAD_ARGS = [
    ("batch_size=-1", r"batch_size=-1 is not valid; batch_size takes an integer >= 1"),
    ("batch_size=0", r"batch_size=0 is not valid; batch_size takes an integer >= 1"),
    ("max_new_tokens=0", r"max_new_tokens=0 is not valid; max_new_tokens takes an integer >= 1"),
    ("mode=future,merge=kernel,merge_kernel=2.5", r"merge_kernel=2.5 is not valid; merge_kernel takes an integer"),
    ("mode=futur", r"unknown mode 'futur'; valid modes are: original, future, future_v2v, future_v2t, mma"),
    ("batch_sise=8", r"unknown argument\(s\) batch_sise; valid model_args are: pretrained, revision, .*attn_impl"),
    ("pretrained=/no/such/checkpoint", r"pretrained='/no/such/checkpoint': no such folder"),
    ("dtype=float8", r"unknown dtype 'float8'; valid values are: auto, bfloat16, float16, float32"),
    ("on_error=ignore", r"unknown on_error 'ignore'; valid values are: record, raise"),
    ("attn_implementation=flash", r"unknown attn_implementation 'flash'; valid values are: sdpa, eager"),
    ("cache_implementation=offloaded", r"unknown cache_implementation 'offloaded'; valid values are: dynamic, static"),
    ("milebench_pad_square=maybe", r"milebench_pad_square=maybe is not valid; milebench_pad_square takes true or"),
    ("mode=future,merge_pool=max", r"\['merge_pool'\] only apply with merge='kernel'"),
    ("merge=kernel", r"merge='kernel' needs a future mode"),
    ("conv_template=llava_v9", r"unknown conv_template 'llava_v9'; valid templates are: auto, llava_hf"),
    ("dtype=float16,autocast=bfloat16,device=cpu", r"dtype=float16 with autocast=bfloat16 .* does not run on the CPU"),
]


@pytest.mark.parametrize("arg_string,message", BAD_ARGS, ids=[a for a, _ in BAD_ARGS])
def test_bad_model_args_are_refused_before_the_model_loads(tiny_model_dir, monkeypatch, arg_string, message):
    from lmms_eval.models import get_model

    from lmms_futuremask.runtime.vlm import VLM

    def never(*args, **kwargs):
        raise AssertionError("the model loaded before the model_args were checked")

    monkeypatch.setattr(VLM, "from_pretrained", never)
    cls = get_model("llava_futuremask")
    with pytest.raises(ModelArgsError, match=message):
        cls.create_from_arg_string(f"pretrained={tiny_model_dir},{arg_string}", {"batch_size": "1"})


def test_injected_auto_batch_size_and_a_file_as_checkpoint_are_refused(tiny_model_dir, tmp_path):
    with pytest.raises(ModelArgsError, match="batch_size=auto is not supported"):
        parse_model_args({"pretrained": str(tiny_model_dir), "batch_size": "auto"})
    with pytest.raises(ModelArgsError, match="max_batch_size only applies to --batch_size auto"):
        parse_model_args({"pretrained": str(tiny_model_dir), "max_batch_size": 8})
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(ModelArgsError, match="is a file; give the checkpoint folder"):
        parse_model_args({"pretrained": str(tmp_path / "weights.bin")})
    with pytest.raises(ModelArgsError, match=r"has no config.json"):
        parse_model_args({"pretrained": str(tmp_path)})
    # A hub id is left to transformers; injected strings from the CLI parse as numbers.
    values = parse_model_args({"pretrained": "llava-hf/llava-1.5-7b-hf", "batch_size": "8", "merge_kernel": None})
    assert values["batch_size"] == 8 and values["pretrained"] == "llava-hf/llava-1.5-7b-hf"


def test_a_missing_relative_checkpoint_path_is_not_taken_for_a_hub_id(tmp_path, monkeypatch):
    """``ckpts/mine`` with a folder ``ckpts`` here is a local path whose last part is missing; without that
    folder it is left to transformers as a hub id."""
    monkeypatch.chdir(tmp_path)
    assert parse_model_args({"pretrained": "ckpts/mine"})["pretrained"] == "ckpts/mine"
    (tmp_path / "ckpts").mkdir()
    with pytest.raises(ModelArgsError, match="pretrained='ckpts/mine': no such folder"):
        parse_model_args({"pretrained": "ckpts/mine"})


def test_the_paper_exact_preset_parses_and_its_autocast_runs_on_the_cpu(tiny_model_dir):
    """configs' exact profile (float16 weights under bfloat16 autocast, batch 1) is valid model_args; its autocast
    runs the model under torch.autocast (seen from inside the forward), here with float32 weights on the CPU."""
    import torch

    from lmms_futuremask.experiments.configs import EXACT_ARGS
    from lmms_futuremask.runtime.model_args import split_model_args
    from lmms_futuremask.runtime.vlm import VLM, GenerationSettings, Sample

    exact = split_model_args(EXACT_ARGS)
    values = parse_model_args({"pretrained": str(tiny_model_dir), **exact, "device": "cuda"})
    assert (values["dtype"], values["autocast"], values["batch_size"]) == ("float16", "bfloat16", 1)
    vlm = VLM.from_pretrained(str(tiny_model_dir), dtype="float32", device="cpu", autocast="bfloat16")
    seen = []
    vlm.model.register_forward_pre_hook(lambda *_: seen.append(torch.get_autocast_dtype("cpu")))
    vlm.model.register_forward_pre_hook(lambda *_: seen.append(torch.is_autocast_enabled("cpu")))
    from PIL import Image

    sample = Sample("<image>\nWhat is it?", [Image.new("RGB", (40, 30), (9, 99, 200))], "autocast")
    vlm.generate_batch([sample], GenerationSettings(max_new_tokens=2))
    assert seen[:2] == [torch.bfloat16, True]


def test_the_guard_above_can_fail(tiny_model_dir, monkeypatch):
    """Valid model_args do reach the model loader (so the refusals above are not an accident of the spy)."""
    from lmms_eval.models import get_model

    from lmms_futuremask.runtime.vlm import VLM

    def reached(*args, **kwargs):
        raise RuntimeError("loader reached")

    monkeypatch.setattr(VLM, "from_pretrained", reached)
    with pytest.raises(RuntimeError, match="loader reached"):
        get_model("llava_futuremask").create_from_arg_string(f"pretrained={tiny_model_dir},batch_size=2", {})


@pytest.mark.slow
def test_cli_run_with_a_bad_batch_size_writes_no_results(tmp_path, tiny_model_dir):
    from lmms_futuremask.testing.sample_task import GROUP_NAME, write_sample_task

    out = tmp_path / "out"
    tasks = write_sample_task(tmp_path / "tasks", n_docs=2)
    args = f"pretrained={tiny_model_dir},batch_size=-1,device=cpu"
    done = lmms_eval_cli(out, "llava_futuremask", args, GROUP_NAME, "--include_path", str(tasks))
    assert "batch_size=-1 is not valid" in done.stdout + done.stderr
    assert not list(out.rglob("*_results.json"))
