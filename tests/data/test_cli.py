"""`mmtrain data make` and `mmtrain data inspect`."""

from __future__ import annotations

import json

from PIL import Image

from mmtrain.cli import main
from tests.data.helpers import make_rows, write_parquet


def test_make_writes_shards_and_a_card(tmp_path, capsys):
    out = tmp_path / "lg"
    code = main(
        [
            "data",
            "make",
            "linear-gaussian",
            "--out",
            str(out),
            "--option",
            "num_examples=40",
            "--option",
            "num_modalities=3",
            "--seed",
            "4",
            "--shards",
            "2",
        ]
    )
    assert code == 0
    card = json.loads((out / "card.json").read_text())
    assert card["seed"] == 4 and card["splits"]["train"]["rows"] == 40
    assert sorted(p.name for p in out.glob("*.parquet")) == [
        "train-00000-of-00002.parquet",
        "train-00001-of-00002.parquet",
    ]
    assert list(card["modalities"]) == ["x1", "x2", "x3"]
    assert card["columns"]["x1"] == "list<item: float>"
    assert "wrote linear-gaussian" in capsys.readouterr().out
    assert main(["data", "make", "--list"]) == 0
    assert "digits" in capsys.readouterr().out
    assert (
        main(
            [
                "data",
                "make",
                "linear-gaussian",
                "--out",
                str(out),
                "--shards",
                "3",
                "--option",
                "num_examples=40",
            ]
        )
        == 0
    )
    assert len(list(out.glob("*.parquet"))) == 3
    (tmp_path / "other" / "mine.txt").parent.mkdir()
    (tmp_path / "other" / "mine.txt").write_text("keep")
    assert main(["data", "make", "ivae-bimodal", "--out", str(tmp_path / "other")]) == 2
    assert "not empty" in capsys.readouterr().err


def test_inspect_reports_schema_rows_presence_text_and_image_grid(tmp_path, capsys):
    out = tmp_path / "digits"
    assert (
        main(
            [
                "data",
                "make",
                "digits",
                "--out",
                str(out),
                "--option",
                "pairings=1",
                "--missing-rate",
                "0.3",
            ]
        )
        == 0
    )
    capsys.readouterr()
    grid = tmp_path / "grid.png"
    assert (
        main(["data", "inspect", str(out), "--split", "test", "--rows", "200", "--out", str(grid)])
        == 0
    )
    report = capsys.readouterr().out
    assert "rows:    1000" in report
    assert "mnist: image" in report and "text: string" in report
    assert "present (first 200 rows):" in report and "[modality mnist]" in report
    assert "text samples (text):" in report
    assert str(grid) in report
    image = Image.open(grid)
    assert image.width > 100 and image.height > 100


def test_inspect_local_jsonl_and_errors(tmp_path, capsys):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"id": 1, "note": "hello"}\n{"id": 2}\n')
    assert main(["data", "inspect", str(path)]) == 0
    report = capsys.readouterr().out
    assert "rows:    unknown" in report and "note: 50.0%" in report and "'hello'" in report
    write_parquet(tmp_path / "p" / "train.parquet", make_rows(10))
    assert main(["data", "inspect", str(tmp_path / "p")]) == 0
    assert "rows:    10" in capsys.readouterr().out
    assert main(["data", "inspect", "someone/dataset"]) == 2
    assert "no network" in capsys.readouterr().err
    assert main(["data", "make", "nope", "--out", str(tmp_path / "x")]) == 2
    assert "unknown dataset 'nope'" in capsys.readouterr().err
