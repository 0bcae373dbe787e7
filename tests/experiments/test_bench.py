"""The benchmark runs (a smoke check, no thresholds) and the variant names it and the demo use."""

import csv

import pytest

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
            "original,future_v2v,future_v2v+merge",
            "--images",
            "1",
            "--batches",
            "1,2",
            "--new-tokens",
            "2",
            "--repeats",
            "1",
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
        assert int(row["prompt_tokens"]) == 1 + 200 + 576
        assert float(row["prefill_ms"]) > 0 and float(row["decode_ms_per_token"]) > 0 and float(row["tokens_per_s"]) > 0
    markdown = (tmp_path / "bench.md").read_text()
    assert "Machine:" in markdown and "| future_v2v+merge | 1 | 2 |" in markdown
