"""MileBench through the real lmms-eval CLI: discovery, the protocol inside llava_futuremask, smoke eval, rescore."""

import json
import math
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from lmms_futuremask.cli import main
from lmms_futuremask.experiments.evalrun import find_results_file
from lmms_futuremask.milebench import GROUPS, TASKS
from lmms_futuremask.milebench.data import load_docs
from lmms_futuremask.milebench.fake import write_fake_milebench
from lmms_futuremask.milebench.llava import ChunkCodec
from lmms_futuremask.milebench.prompt import full_prompt, render

from ..helpers import lmms_eval_cli, milebench_archives, protocol_sample, texts

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


@pytest.fixture(scope="module")
def fake_root(tmp_path_factory):
    return write_fake_milebench(tmp_path_factory.mktemp("MileBench"), samples_per_task=3)


def test_task_yamls_match_the_catalog():
    folder = REPO / "tasks" / "milebench"
    for task in TASKS:
        text = (folder / f"{task.task_name}.yaml").read_text()
        assert f"task: {task.task_name}\n" in text and "include: _default_template_yaml" in text
    for group, tasks in GROUPS.items():
        text = (folder / f"{group}.yaml").read_text()
        listed = [line.strip()[2:] for line in text.splitlines() if line.startswith("  - milebench")]
        assert listed == [t.task_name for t in tasks], group
        assert "weight_by_size: false" in text
    assert len(GROUPS["milebench"]) == 29 and len(GROUPS["milebench_paper"]) == 13


@pytest.mark.slow  # indexes every lmms-eval task
def test_tasks_are_found_without_include_path():
    import lmms_eval.models  # noqa: F401  - loads the entry points, as the CLI does
    from lmms_eval.tasks import TaskManager

    names = set(TaskManager().all_tasks)
    assert {t.task_name for t in TASKS} <= names and set(GROUPS) <= names
    assert {t.task_name for t in TASKS} <= set(TaskManager(include_path=str(REPO / "tasks" / "milebench")).all_tasks)


def test_llava_futuremask_applies_the_protocol(tiny_model_dir, fake_root, monkeypatch):
    from lmms_eval.models import get_model

    monkeypatch.setenv("MILEBENCH_DIR", str(fake_root))
    docs = load_docs("CLEVR-Change", fake_root)
    model = get_model("llava_futuremask").create_from_arg_string(f"pretrained={tiny_model_dir},device=cpu", {})
    model.task_dict = {"milebench_clevr_change": {"test": docs}}
    sample = protocol_sample(model, "milebench_clevr_change", 0)
    codec = ChunkCodec(model.tokenizer)
    rendered = render(docs[0], codec.encode, codec.decode, 4096, [16, 16])
    text, kept = rendered.text, rendered.images
    assert sample.context == text and len(sample.images) == len(kept) == 2
    prompt = model.vlm.prompt(sample)
    assert prompt.startswith("[INST] <<SYS>>\nYou are a helpful language and vision assistant.")
    assert prompt.endswith("\n<image>\n<image>\nDifference: [/INST]")
    assert all(img.size[0] == img.size[1] for img in sample.images)  # padded to square
    # A small budget drops the leftmost image; an explicit template applies to MileBench too.
    small = get_model("llava_futuremask").create_from_arg_string(
        f"pretrained={tiny_model_dir},device=cpu,milebench_context_len=60,conv_template=plain", {}
    )
    small.task_dict = model.task_dict
    sample = protocol_sample(small, "milebench_clevr_change", 0)
    assert len(sample.images) == 1 and small.vlm.prompt(sample) == sample.context


@pytest.mark.slow
def test_smoke_eval_over_all_milebench_tasks(tmp_path, tiny_model_dir, fake_root):
    """CI smoke: the real CLI over `milebench` at --limit 2; every task and group has a finite score."""
    out = tmp_path / "run"
    args = f"pretrained={tiny_model_dir},mode=future_v2v,device=cpu,max_new_tokens=6,batch_size=2"
    done = lmms_eval_cli(out, "llava_futuremask", args, "milebench", "--limit", "2", "--log_samples", data=fake_root)
    results = json.loads(find_results_file(out).read_text())["results"]
    assert "milebench" in results, done.stderr[-3000:]
    assert math.isfinite(results["milebench"]["score,none"])
    for task in TASKS:
        metrics = results[task.task_name]
        assert math.isfinite(metrics["score,none"]) and metrics["failed_samples,none"] == 0, task.task_name
    expected_group = sum(results[t.task_name]["score,none"] for t in TASKS) / 29
    assert results["milebench"]["score,none"] == pytest.approx(expected_group)

    # Offline re-scoring of the saved samples gives the numbers lmms-eval reported.
    table_file = tmp_path / "rescore.json"
    assert main(["rescore", str(out), "--data-dir", str(fake_root), "--json", str(table_file)]) == 0
    rescored = json.loads(table_file.read_text())
    for task in TASKS:
        for metric, value in rescored[task.task_name].items():
            if metric != "samples":
                assert value == pytest.approx(results[task.task_name][f"{metric},none"]), (task.task_name, metric)
    assert rescored["milebench"]["score"] == pytest.approx(results["milebench"]["score,none"])


def test_download_from_local_archives_resumes_and_verifies(tmp_path, capsys):
    data = write_fake_milebench(tmp_path / "src", samples_per_task=1)
    archives = milebench_archives(tmp_path / "archives", data)
    target = tmp_path / "MileBench"
    damaged = archives / "MileBench_part3.tar.gz"
    good = damaged.read_bytes()
    damaged.write_bytes(good[: len(good) // 2])
    assert main(["download-milebench", "--dir", str(target), "--source", str(archives)]) == 2
    assert "MileBench_part3.tar.gz is damaged" in capsys.readouterr().err
    assert len(list((target / ".parts").glob("*.done"))) == 3  # parts 0-2 finished before the damaged one
    damaged.write_bytes(good)
    assert main(["download-milebench", "--dir", str(target), "--source", str(archives)]) == 0
    out = capsys.readouterr().out
    assert "MileBench_part0.tar.gz: already extracted, skipped" in out and "all 29 tasks verified" in out
    for folder in (t.folder for t in TASKS):
        assert (target / folder / f"{folder}.json").is_file()
    (target / "TQA" / "images" / load_docs("TQA", target)[0]["images"][0]).unlink()
    assert main(["download-milebench", "--dir", str(target), "--source", str(archives)]) == 0  # repaired
    assert "extracting again to repair TQA" in capsys.readouterr().out
    archive_tqa = next(p for p in archives.iterdir() if "TQA" in [m.name.split("/")[1] for m in tarfile.open(p)])
    with tarfile.open(archive_tqa) as tar:  # an archive that itself lacks an image cannot repair it
        members = [m for m in tar.getmembers() if not m.name.endswith(load_docs("TQA", target)[0]["images"][0])]
        tar.extractall(tmp_path / "partial", members=members, filter="data")
    with tarfile.open(archive_tqa, "w:gz") as tar:
        tar.add(tmp_path / "partial" / "MileBench", arcname="MileBench")
    (target / "TQA" / "images" / load_docs("TQA", target)[0]["images"][0]).unlink()
    assert main(["download-milebench", "--dir", str(target), "--source", str(archives)]) == 1
    out = capsys.readouterr().out
    assert "FAIL TQA: 1 image(s) missing" in out and "the archive itself is incomplete" in out


@pytest.mark.slow
def test_fake_milebench_command(tmp_path):
    done = subprocess.run(
        [str(Path(sys.executable).parent / "lmms-futuremask"), "fake-milebench", str(tmp_path), "--samples", "2"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert all(len(load_docs(t.folder, tmp_path)) == 2 for t in TASKS)


@pytest.mark.slow  # indexes every lmms-eval task
def test_protocol_generation_settings_have_no_stop_string(tiny_model_dir, fake_root, monkeypatch):
    import lmms_eval.models  # noqa: F401
    from lmms_eval.tasks import TaskManager, get_task_dict

    monkeypatch.setenv("MILEBENCH_DIR", str(fake_root))
    task = get_task_dict(["milebench_tqa"], TaskManager())["milebench_tqa"]
    kwargs = task.config.generation_kwargs
    assert kwargs["max_new_tokens"] == 512 and kwargs["min_new_tokens"] == 1 and kwargs["until"] == []
    assert kwargs["temperature"] == 0 and kwargs["do_sample"] is False


def test_placeholder_mismatch_and_unreadable_image_are_recorded_per_sample(tiny_model_dir, fake_root, monkeypatch):
    from lmms_eval.models import get_model

    from lmms_futuremask.milebench.task_hooks import process_results
    from lmms_futuremask.runtime.errors import ERROR_MARKER

    docs = load_docs("TQA", fake_root)
    broken = dict(docs[0], context=docs[0]["context"] + " {image#1}", images=docs[0]["images"][:1])  # upstream crashes
    unreadable = dict(docs[1], images=["missing.png", *docs[1]["images"][1:]])
    model = get_model("llava_futuremask").create_from_arg_string(f"pretrained={tiny_model_dir},device=cpu", {})
    model.task_dict = {"milebench_tqa": {"test": [broken, unreadable, docs[2]]}}
    from lmms_eval.api.instance import Instance

    def request(i):
        doc = model.task_dict["milebench_tqa"]["test"][i]
        args = (full_prompt(doc), {"max_new_tokens": 4, "until": []}, None, i, "milebench_tqa", "test")
        return Instance("generate_until", args, idx=0, metadata={"task": "milebench_tqa", "doc_id": i, "repeats": 1})

    answers = texts(model.generate_until([request(0), request(1), request(2)]))
    assert answers[0].startswith(ERROR_MARKER) and f"sample {docs[0]['sample_id']}" in answers[0]
    assert answers[1].startswith(ERROR_MARKER) and "missing.png" in answers[1]
    assert not answers[2].startswith(ERROR_MARKER)
    result = process_results(docs[0], [answers[0]])
    assert result["score"]["score"] == 0 and result["failed_samples"]["failed"] is True
