"""The benchmark runs (a smoke check, no thresholds) and the variant names it and the demo use."""

import csv
import itertools

import pytest
import torch

from lmms_futuremask.attention.variants import PAPER_VARIANTS, parse_variant, variant_model_args
from lmms_futuremask.cli import main


def test_variant_names():
    assert parse_variant("future_v2v+merge") == ("future_v2v", "kernel")
    assert variant_model_args("future_v2t") == "mode=future_v2t"
    assert variant_model_args("future+merge") == "mode=future,merge=kernel"
    assert len(PAPER_VARIANTS) == 7
    with pytest.raises(ValueError, match="MODE or MODE\\+merge"):
        parse_variant("future+pool")
    with pytest.raises(ValueError, match="valid modes"):
        parse_variant("futur")


def test_bench_smoke_on_the_cpu(tmp_path, capsys):
    code = main(
        [
            "bench",
            "--variants",
            "future_v2v,future_v2v+merge",
            "--images",
            "2",
            "--batches",
            "1,2",
            "--new-tokens",
            "2",
            "--repeats",
            "2",
            "--out-dir",
            str(tmp_path),
        ]
    )
    assert code == 0
    rows = list(csv.DictReader((tmp_path / "bench.csv").open()))
    assert [(r["variant"], r["batch"]) for r in rows] == [
        (v, b) for b in ("1", "2") for v in ("original", "future_v2v", "future_v2v+merge")
    ]
    for row in rows:
        assert int(row["prompt_tokens"]) == 1 + 200 + 2 * 576 and row["rounds"] == "2"
        assert float(row["prefill_ms"]) > 0 and float(row["decode_ms_per_token"]) > 0 and float(row["tokens_per_s"]) > 0
        assert 0 < float(row["attention_ms"]) < float(row["prefill_ms"])
        low, mid, high = (float(row[f"decode_x{s}"]) for s in ("_low", "", "_high"))
        assert 0 < low <= mid <= high
        if row["variant"] == "original":
            assert float(row["prefill_x"]) == 1.0 and float(row["decode_x"]) == 1.0
    markdown = (tmp_path / "bench.md").read_text()
    assert "Machine:" in markdown and "| future_v2v+merge | 2 | 2 |" in markdown
    assert "| future_v2v | 64.13 ms | 26.40 ms | 2.4x |" in markdown  # the paper's Table 6 beside ours
    assert "| future | 83.18 ms | 26.54 ms | 3.1x | not run | not run |" in markdown


def test_bench_interleaves_variants_and_rotates_their_order(monkeypatch):
    from lmms_futuremask.experiments import bench

    calls = []

    def fake(model, variant, inputs, new_tokens, device):
        calls.append((variant, new_tokens))
        slow = variant != "original"
        return bench._Timing(2.0 + slow, 1.0, None, 4.0, 2.0 + 2 * slow, attention_s=0.5 + 0.2 * slow)

    monkeypatch.setattr(bench, "time_variant", fake)
    inputs = bench.make_inputs(1, 1, 10, "cpu", torch.float32)
    rows = bench.bench_shape(None, ("original", "a", "b"), inputs, 64, "cpu", rounds=3)
    timed = [v for v, n in calls if n == 64]
    assert timed == ["original", "a", "b", "a", "b", "original", "b", "original", "a"]
    assert [n for _v, n in calls[:3]] == [2, 2, 2]  # the warm-up round
    assert [(r.variant, r.prefill_x, r.decode_x) for r in rows] == [("original", 1, 1), ("a", 1.5, 1), ("b", 1.5, 1)]
    assert [(r.prefill_cpu_x, r.decode_cpu_x) for r in rows] == [(1, 1), (1, 2), (1, 2)]  # CPU time, its own ratios
    assert [r.attention_extra for r in rows] == pytest.approx([0, 0.1, 0.1])  # 0.2 s more attention / 2 s prefill


def test_bench_inputs_interleave_text_and_images():
    from lmms_futuremask.experiments.bench import IMAGE_TOKEN_ID, make_inputs

    ids = make_inputs(1, 2, 9, "cpu", torch.float32)["input_ids"][0]
    visual = (ids == IMAGE_TOKEN_ID).int().tolist()
    runs = [visual[0]] + [b for a, b in itertools.pairwise(visual) if a != b]
    assert runs == [0, 1, 0, 1, 0] and ids.shape[0] == 1 + 9 + 2 * 576


def test_bench_refuses_bad_variants_before_building_a_model(monkeypatch):
    from lmms_futuremask.experiments import bench

    monkeypatch.setattr(bench, "build_model", lambda *a, **k: pytest.fail("built a model"))
    with pytest.raises(ValueError, match="valid modes"):
        bench.run_bench(variants=("futur",))
