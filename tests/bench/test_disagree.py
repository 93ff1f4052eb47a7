"""`bench disagree` (Table 4) refuses prediction files it cannot compare, naming them (issue #32)."""

import os

import pytest
import torch

from bench import cli
from bench.disagree import top1_columns
from bench.predictions import Predictions


def save(path, names=("a", "b", "c"), targets=(0, 1, 2), top5=None, loss_sum=0.0):
    top5 = {"": torch.tensor([[0], [1], [1]])} if top5 is None else top5
    blob = {"names": names if isinstance(names, str) else list(names), "targets": torch.tensor(targets) if isinstance(targets, tuple) else targets,
            "top5": top5, "loss_sum": loss_sum}
    torch.save(blob, path)
    return str(path)


def test_files_whose_ground_truth_differs_are_refused_naming_both(tmp_path, capsys):
    """#32 row 15: the first file's labels were used without looking at the others'."""
    first = save(tmp_path / "one.pt")
    second = save(tmp_path / "two.pt", names=("c", "b", "a"), targets=(2, 1, 1))  # image a: 0 in one, 1 in two
    third = save(tmp_path / "three.pt")
    assert cli.main(["disagree", first, third, second]) == 2
    err = capsys.readouterr().err
    assert first in err and second in err and "ground truth" in err and "1 of the 3" in err and "Traceback" not in err


def test_the_same_ground_truth_in_another_image_order_is_accepted(tmp_path, capsys):
    first = save(tmp_path / "one.pt")
    second = save(tmp_path / "two.pt", names=("c", "b", "a"), targets=(2, 1, 0))
    assert cli.main(["disagree", first, second, "--json"]) == 0


@pytest.mark.parametrize("fields,message", [
    ({"names": "abc"}, "names"),
    ({"names": ("a", "a", "b")}, "names"),
    ({"targets": (0, 1)}, "targets"),
    ({"targets": [0, 1, 2]}, "targets"),
    ({"targets": torch.tensor([0.0, 1.0, 2.0])}, "targets"),
    ({"top5": {"": torch.tensor([0, 1, 1])}}, "top5"),
    ({"top5": {"": torch.tensor([[0], [1]])}}, "top5"),
    ({"top5": {"": [[0], [1], [1]]}}, "top5"),
    ({"top5": {"cls": torch.zeros(3, 0, dtype=torch.long)}}, "top5"),
    ({"top5": {}}, "top5"),
])
def test_a_malformed_prediction_file_is_named_with_the_field(tmp_path, capsys, fields, message):
    good = save(tmp_path / "good.pt")
    bad = save(tmp_path / "bad.pt", **fields)
    assert cli.main(["disagree", good, bad]) == 2
    err = capsys.readouterr().err
    assert bad in err and message in err and "Traceback" not in err


def test_a_fifo_is_refused_not_waited_on(tmp_path, capsys):
    good = save(tmp_path / "good.pt")
    os.mkfifo(tmp_path / "fifo.pt")
    assert cli.main(["disagree", good, str(tmp_path / "fifo.pt")]) == 2
    assert "not a regular file" in capsys.readouterr().err


def test_predictions_written_by_bench_run_still_compare(tmp_path, capsys):
    Predictions(["a", "b"], torch.tensor([0, 1]), {"": torch.tensor([[0, 1], [0, 1]])}, 0.5).save(tmp_path / "x.pt")
    Predictions(["a", "b"], torch.tensor([0, 1]), {"": torch.tensor([[1, 0], [1, 0]])}, 0.5).save(tmp_path / "y.pt")
    assert cli.main(["disagree", str(tmp_path / "x.pt"), str(tmp_path / "y.pt"), "--json"]) == 0


def test_two_copies_of_the_val_folder_under_other_names_compare_image_by_image(tmp_path, capsys):
    """A hostile pass: predictions from /data/imagenet/val and /scratch/ILSVRC2012_img_val "shared no image"; the
    flat layout's names carried the folder's own name. Files written before the fix compare too."""
    name = "ILSVRC2012_val_{:08d}.JPEG".format
    Predictions([f"val/{name(1)}", f"val/{name(2)}"], torch.tensor([3, 5]),
                {"": torch.tensor([[3, 0], [5, 0]])}, 0.5).save(tmp_path / "old.pt")  # as written before
    Predictions([name(2), name(1)], torch.tensor([5, 3]), {"": torch.tensor([[0, 5], [3, 0]])}, 0.5).save(
        tmp_path / "new.pt")
    assert cli.main(["disagree", str(tmp_path / "old.pt"), str(tmp_path / "new.pt"), "--json"]) == 0
    columns, images, _ = top1_columns([tmp_path / "old.pt", tmp_path / "new.pt"])
    assert images == 2 and columns["ground truth"].tolist() == [3, 5]
    assert columns["old"].tolist() == [3, 5] and columns["new"].tolist() == [3, 0]


def _made(protocol: str, crop: int, precision: str = "fp32") -> dict:
    return {"model": "deit_tiny_patch16_224", "img_size": 224, "precision": precision,
            "preprocess": {"protocol": protocol, "img_size": 224, "crop_pct": crop / 1000,
                           "resize_size": 256 if protocol == "official" else 248, "interpolation": "bicubic",
                           "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}}


def test_bench_disagree_names_how_its_files_were_made_differently(tmp_path, capsys):
    """A hostile pass: a timm-crop file and an official-crop one made a Table 4 without a word."""
    top5 = {"": torch.tensor([[0, 1], [1, 0]])}
    Predictions(["a", "b"], torch.tensor([0, 1]), top5, 0.5, _made("official", 875)).save(tmp_path / "off.pt")
    Predictions(["a", "b"], torch.tensor([0, 1]), top5, 0.5, _made("timm", 900, "amp_bf16")).save(tmp_path / "timm.pt")
    Predictions(["a", "b"], torch.tensor([0, 1]), top5, 0.5, _made("official", 875)).save(tmp_path / "off2.pt")
    Predictions(["a", "b"], torch.tensor([0, 1]), top5, 0.5).save(tmp_path / "old.pt")
    assert cli.main(["disagree", str(tmp_path / "off.pt"), str(tmp_path / "timm.pt")]) == 0
    err = capsys.readouterr().err
    assert "precision differs, so not only the models do" in err and "timm.pt: amp_bf16" in err
    assert "preprocess differs" in err and "official (resize 256, crop 224, bicubic)" in err
    assert cli.main(["disagree", str(tmp_path / "off.pt"), str(tmp_path / "off2.pt")]) == 0
    assert capsys.readouterr().err == ""  # made alike: nothing to say
    assert cli.main(["disagree", str(tmp_path / "off.pt"), str(tmp_path / "old.pt")]) == 0
    assert "old.pt: written before prediction files said how they were made" in capsys.readouterr().err


def test_files_that_differ_only_in_normalisation_are_named_in_full():
    """A review: the short form of the preprocessing left out mean and std, so two files that differed only there
    gave no note."""
    from bench.disagree import made_differently

    other = _made("timm", 900)
    other["preprocess"] = {**other["preprocess"], "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}
    top5 = {"": torch.tensor([[0]])}
    loaded = [("a.pt", Predictions(["x"], torch.tensor([0]), top5, 0.0, _made("timm", 900))),
              ("b.pt", Predictions(["x"], torch.tensor([0]), top5, 0.0, other))]
    [note] = made_differently(loaded)
    assert note.startswith("preprocess differs") and "0.5" in note and "0.485" in note

