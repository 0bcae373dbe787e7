"""Damaged MileBench data repairs itself or is refused with the fix: download repair, links and paths outside a
task, unusual images, and rescoring against other data."""

import json
import logging
import os
import sys
import tarfile
from pathlib import Path

import pytest
from PIL import Image

from lmms_futuremask.cli import main
from lmms_futuremask.experiments.evalrun import OFFLINE_ENV
from lmms_futuremask.milebench.data import MileBenchDataError, image_size, load_docs, open_image
from lmms_futuremask.milebench.fake import write_fake_milebench

from ..helpers import milebench_archives

BIN = Path(sys.executable).parent
ENV = {**os.environ, **OFFLINE_ENV}


# -- 4, 5. download: repair, links, containment -----------------------------------------------------------------------


def test_download_repairs_a_deleted_task_and_a_truncated_json(tmp_path, capsys):
    import shutil

    archives = milebench_archives(tmp_path / "archives", write_fake_milebench(tmp_path / "src", samples_per_task=1))
    target = tmp_path / "MileBench"
    command = ["download-milebench", "--dir", str(target), "--source", str(archives)]
    assert main(command) == 0
    shutil.rmtree(target / "ALFRED")
    shutil.rmtree(target / "TQA")
    json_file = target / "DocVQA" / "DocVQA.json"
    json_file.write_text(json_file.read_text()[:50])
    # The error a run gets names every missing task at once, and the command that repairs them.
    with pytest.raises(
        MileBenchDataError, match=r"ALFRED.json, which is missing.* 1 other task\(s\) are missing too: TQA"
    ):
        load_docs("ALFRED", target)
    capsys.readouterr()
    assert main(command) == 0
    out = capsys.readouterr().out
    for task in ("ALFRED", "TQA", "DocVQA"):
        assert f"extracting again to repair {task}" in out
        assert load_docs(task, target)
    assert "all 29 tasks verified" in out
    assert not list(target.glob(".extract-*"))


def test_archives_with_links_are_refused_and_leave_no_staging_folder(tmp_path, capsys):
    data = write_fake_milebench(tmp_path / "src", samples_per_task=1)
    archives = milebench_archives(tmp_path / "archives", data)
    outside = tmp_path / "secret.png"
    Image.new("RGB", (8, 8)).save(outside)
    part = archives / "MileBench_part0.tar.gz"
    with tarfile.open(part, "w:gz") as tar:  # ALFRED's first image becomes a link that escapes once moved
        tar.add(data / "ALFRED" / "ALFRED.json", arcname="MileBench/ALFRED/ALFRED.json")
        link = tarfile.TarInfo(f"MileBench/ALFRED/images/{load_docs('ALFRED', data)[0]['images'][0]}")
        link.type, link.linkname = tarfile.SYMTYPE, "../../../secret.png"
        tar.addfile(link)
    target = tmp_path / "MileBench"
    assert main(["download-milebench", "--dir", str(target), "--source", str(archives), "--parts", "0"]) == 2
    err = capsys.readouterr().err
    assert "is a link (symbolic)" in err and "refused" in err
    assert not list(target.glob(".extract-*")) and not (target / "ALFRED").exists()


def test_a_damaged_local_archive_is_not_to_be_deleted_by_the_user(tmp_path, capsys):
    archives = milebench_archives(tmp_path / "archives", write_fake_milebench(tmp_path / "src", samples_per_task=1))
    part = archives / "MileBench_part0.tar.gz"
    part.write_bytes(part.read_bytes()[:200])
    target = tmp_path / "MileBench"
    assert main(["download-milebench", "--dir", str(target), "--source", str(archives), "--parts", "0"]) == 2
    err = capsys.readouterr().err
    assert "replace it in --source" in err and "delete" not in err
    assert part.exists() and not list(target.glob(".extract-*"))


def test_an_image_outside_its_task_folder_is_refused(tmp_path):
    from lmms_futuremask.milebench.download import check_task

    data = write_fake_milebench(tmp_path / "mb", samples_per_task=1)
    Image.new("RGB", (8, 8)).save(data / "outside.png")
    path = data / "TQA" / "TQA.json"
    content = json.loads(path.read_text())
    content["data"][0]["task_instance"]["images_path"][0] = "../../outside.png"
    path.write_text(json.dumps(content))
    doc = load_docs("TQA", data)[0]
    with pytest.raises(MileBenchDataError, match=r"outside .*TQA/images"):
        open_image(doc, 0)
    check = check_task("TQA", data)
    assert not check.ok and "lead outside" in check.detail


def test_wide_and_oversized_images_name_their_file(tmp_path, caplog, monkeypatch):
    import numpy as np
    from PIL import Image as PILImage

    data = write_fake_milebench(tmp_path / "mb", samples_per_task=1)
    doc = load_docs("TQA", data)[0]
    path = data / "TQA" / "images" / doc["images"][0]
    PILImage.fromarray(np.full((8, 8), 40000, dtype=np.uint16)).save(path)  # 16-bit grey
    with caplog.at_level(logging.WARNING, logger="lmms_futuremask.milebench"):
        image = open_image(doc, 0)
    assert image.mode == "RGB" and str(path) in caplog.text and "16-bit" in caplog.text
    monkeypatch.setattr(PILImage, "MAX_IMAGE_PIXELS", 10)
    for read in (open_image, image_size):  # image_size: what the chat protocol prices an image with
        with pytest.raises(MileBenchDataError, match=f"image {path} is too large for PIL"):
            read(doc, 0)


# -- 10. rescore against other data ------------------------------------------------------------------------------------


def test_rescore_against_data_with_fewer_samples_says_what_differs(tmp_path, capsys):
    from lmms_futuremask.milebench.rescore import rescore_logs

    big = write_fake_milebench(tmp_path / "big", samples_per_task=4)
    small = write_fake_milebench(tmp_path / "small", samples_per_task=2, seed=5)
    logs = tmp_path / "logs"
    logs.mkdir()
    records = [
        {"doc_id": i, "target": d["answer"], "filtered_resps": ["A"]} for i, d in enumerate(load_docs("TQA", big))
    ]
    (logs / "x_samples_milebench_tqa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert rescore_logs(logs, big)["milebench_tqa"]["samples"] == 4  # the data the run used: fine
    with pytest.raises(MileBenchDataError, match=r"4 sample\(s\) differ.*doc 2 is not one of its 2 samples"):
        rescore_logs(logs, small)
    assert main(["rescore", str(logs), "--data-dir", str(small)]) == 2
    assert "does not match the MileBench data" in capsys.readouterr().err
