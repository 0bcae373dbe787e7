"""A routed run (``routing=routing.yaml``) is exactly the union of the separate runs it claims to be, and a bad
routing file is refused before the model loads."""

import pytest

from lmms_futuremask.experiments.evalrun import find_results_file, read_samples, response_of, sample_files
from lmms_futuremask.milebench.fake import write_fake_milebench
from lmms_futuremask.runtime.routing import write_routing
from lmms_futuremask.runtime.vlm import VLM

from ..helpers import GEN, doc_to_visual, docs, generate_requests, lmms_eval_cli, make_model, request, texts

TQA, CLEVR = "milebench_tqa", "milebench_clevr_change"


def answers(out):
    """task -> doc_id -> the generated text, from a run's --log_samples files."""
    files = sample_files(find_results_file(out))
    return {task: {r["doc_id"]: response_of(r) for r in read_samples(path)} for task, path in files.items()}


@pytest.mark.slow
def test_a_routed_run_answers_as_the_separate_variant_runs(tmp_path, tiny_model_dir):
    data = write_fake_milebench(tmp_path / "MileBench", samples_per_task=4)
    routing = write_routing(tmp_path / "routing.yaml", {TQA: "future_v2v", CLEVR: "future+merge"}, "test")
    base = f"pretrained={tiny_model_dir},device=cpu,max_new_tokens=8,batch_size=3"
    tasks = f"{TQA},{CLEVR}"
    routed = lmms_eval_cli(
        tmp_path / "routed", "llava_futuremask", f"{base},routing={routing}", tasks, "--log_samples", data=data
    )
    assert "routing" in routed.stdout + routed.stderr
    got = answers(tmp_path / "routed")
    lmms_eval_cli(tmp_path / "v2v", "llava_futuremask", f"{base},mode=future_v2v", TQA, "--log_samples", data=data)
    merge = f"{base},mode=future,merge=kernel"
    lmms_eval_cli(tmp_path / "merge", "llava_futuremask", merge, CLEVR, "--log_samples", data=data)
    lmms_eval_cli(tmp_path / "orig", "llava_futuremask", base, tasks, "--log_samples", data=data)
    expected = {TQA: answers(tmp_path / "v2v")[TQA], CLEVR: answers(tmp_path / "merge")[CLEVR]}
    assert got == expected and all(len(per_doc) == 4 for per_doc in got.values())
    # Guard: the variants answer differently from original here, so equality above is not a coincidence.
    assert answers(tmp_path / "orig") != expected


def test_a_routed_model_switches_modes_between_batches_only(tiny_model_dir, tmp_path, monkeypatch):
    """In one generate_until call over two tasks, each batch runs under its task's variant."""
    calls = []
    real = VLM.generate_batch

    def spy(self, samples, settings):
        from lmms_futuremask.attention.integration import current_mode

        calls.append((current_mode(self.model), tuple(sorted({s.where.split(" doc")[0] for s in samples}))))
        return real(self, samples, settings)

    monkeypatch.setattr(VLM, "generate_batch", spy)
    check = lambda: lambda task: task in ("toy", "other")  # noqa: E731
    monkeypatch.setattr("lmms_futuremask.model_wrappers.base.known_tasks_check", check)
    routing = write_routing(tmp_path / "r.yaml", {"toy": "future"}, "test")
    model = make_model(tiny_model_dir, routing=routing, batch_size=2)
    model.task_dict["other"] = model.task_dict["toy"]
    other = [
        request("generate_until", (docs()[i]["question"], dict(GEN), doc_to_visual, i, "other", "test"))
        for i in range(3)
    ]
    results = texts(model.generate_until(generate_requests() + other))
    assert len(results) == 8
    assert all((mode, tasks) in {("future", ("task toy",)), ("original", ("task other",))} for mode, tasks in calls)
    assert model.vlm.model._futuremask.mode in ("future", "original")


@pytest.mark.parametrize(
    "text, message",
    [
        ("tasks:\n  milebench_nope: future\n", "unknown task"),
        ("tasks:\n  milebench_tqa: futur\n", "unknown mode 'futur'"),
    ],
)
def test_a_bad_routing_file_is_refused_before_the_model_loads(tmp_path, tiny_model_dir, monkeypatch, text, message):
    from lmms_eval.models import get_model

    path = tmp_path / "routing.yaml"
    path.write_text(text)
    monkeypatch.setattr(VLM, "from_pretrained", lambda *a, **k: pytest.fail("the model loaded"))
    with pytest.raises(ValueError, match=message):
        get_model("llava_futuremask").create_from_arg_string(f"pretrained={tiny_model_dir},routing={path}", {})
