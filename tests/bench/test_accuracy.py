import dataclasses
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch
from helpers import folder_tree, jpeg
from PIL import Image
from torch import nn
from torchvision import transforms

from bench import checkpoint, cli, data
from bench.accuracy import EvalOptions
from bench.evaluate import Predictions, scores
from bench.registry import VARIANTS

SHARED = Path(__file__).resolve().parents[3] / "shared" / "datasets"


# Biases chosen so the four outputs of a distilled model disagree: class head -> 0, distillation head -> 1,
# mean of logits -> 2 (5, 4.5, 6), sum of softmaxes -> 0 (0.982, 0.953, 0.065). Other classes rank 3, 4, …
CLS_BIAS = [10.0, 0.0, 6.0] + [-10.0 - i for i in range(7)]
DIST_BIAS = [0.0, 9.0, 6.0] + [-10.0 - i for i in range(7)]


CIFAR10 = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def known_checkpoint(path: Path, variant="debug_dist", class_names=None) -> Path:
    """Zero head weights: every image gets the logits = the biases above, whatever it shows."""
    model = VARIANTS[variant].build()
    state = model.state_dict()
    state["head.weight"].zero_()
    state["head.bias"].copy_(torch.tensor(CLS_BIAS))
    if "head_dist.weight" in state:
        state["head_dist.weight"].zero_()
        state["head_dist.bias"].copy_(torch.tensor(DIST_BIAS))
    names = {"class_names": class_names} if class_names else {}  # as reproduce train writes them
    torch.save({"model": state, "epoch": 3, **names}, path)  # the official training-checkpoint layout
    return path


def run_json(capsys, *argv):
    # fp32 stated: `auto` would pick bf16 on a CPU with native bf16 and move the numbers compared here
    evaluates = "--data" in argv or "--pretrained" in argv  # else these two are refused: nothing would read them
    defaults = [*(["--workers", "0"] if "--workers" not in argv else []), "--eval-batch-size", "4"]
    code = cli.main(["run", "--device", "cpu", "--precision", "fp32", "--json", *(defaults if evaluates else []),
                     *argv])  # an option given twice is refused: a test's own --workers replaces the default
    out, err = capsys.readouterr()
    return code, (json.loads(out) if code == 0 else None), err


@pytest.fixture
def ten_class_tree(tmp_path):
    # labels by sorted folder name: c0..c9; 4 images of class 0, 3 of 1, 2 of 2, 1 of 3, 1 of 9
    root = folder_tree(tmp_path / "data", {"c0": 4, "c1": 3, "c2": 2, "c3": 1, "c9": 1})
    for name in ("c4", "c5", "c6", "c7", "c8"):
        (root / name).mkdir()
    return root


def test_each_head_of_a_distilled_model_scores_exactly_what_its_predictions_imply(capsys, tmp_path, ten_class_tree):
    ckpt = known_checkpoint(tmp_path / "known.pth")
    code, record, err = run_json(capsys, "--variant", "debug_dist", "--metrics", "accuracy",
                                 "--data", str(ten_class_tree), "--checkpoint", str(ckpt), "--results-dir", str(tmp_path / "r"))
    assert code == 0, err
    m = record["metrics"]
    assert m["images"] == 11
    assert m["top1_cls"] == pytest.approx(100 * 4 / 11)
    assert m["top1_dist"] == pytest.approx(100 * 3 / 11)
    assert m["top1_fused_logits"] == m["top1"] == pytest.approx(100 * 2 / 11)
    assert m["top1_fused_probs"] == pytest.approx(100 * 4 / 11)
    assert m["top5"] == pytest.approx(100 * 10 / 11)  # the class-9 image is outside every top 5
    assert record["settings"]["eval"]["preprocess"]["crop_pct"] == 0.875
    assert "not an official release" in record["notes"][0]


def test_a_plain_model_records_top1_top5_and_loss_only(capsys, tmp_path, ten_class_tree):
    ckpt = known_checkpoint(tmp_path / "plain.pth", variant="debug")
    code, record, _ = run_json(capsys, "--variant", "debug", "--metrics", "accuracy", "--data", str(ten_class_tree),
                               "--checkpoint", str(ckpt), "--results-dir", str(tmp_path / "r"))
    assert code == 0
    assert {"top1", "top5", "loss"} <= set(record["metrics"]) and "top1_cls" not in record["metrics"]
    assert record["metrics"]["top1"] == pytest.approx(100 * 4 / 11)
    # 11 images in batches of 4: the steady rate counts the 7 images after the first batch
    assert record["metrics"]["eval_img_per_s_steady"] > 0 and record["metrics"]["eval_img_per_s"] > 0


def test_imagenet_v2_folders_are_class_indices_not_strings(tmp_path):
    root = folder_tree(tmp_path / "v2", {str(i): 1 for i in [0, 1, 2, 3, 10, 11, 100, 999]})
    samples, layout = data.find_samples(root)
    assert layout == "imagenet-v2"
    assert {p.parent.name: label for p, label in samples} == {str(i): i for i in [0, 1, 2, 3, 10, 11, 100, 999]}


def test_class_folders_are_indexed_in_sorted_order(tmp_path):
    samples, layout = data.find_samples(folder_tree(tmp_path / "f", {"truck": 1, "airplane": 1, "cat": 1}))
    assert layout == "folder" and [(p.parent.name, y) for p, y in samples] == [("airplane", 0), ("cat", 1), ("truck", 2)]


def test_the_flat_ilsvrc_folder_reads_its_labels_file(tmp_path):
    root = tmp_path / "val"
    for i in (1, 2, 7):
        jpeg(root / f"ILSVRC2012_val_{i:08d}.JPEG", seed=i)
    (tmp_path / data.LABELS_NAME).write_text("ILSVRC2012_val_00000001.JPEG 65\nILSVRC2012_val_00000002.JPEG 970\n"
                                             "ILSVRC2012_val_00000007.JPEG 0\n")
    samples, layout = data.find_samples(root)
    assert layout == "imagenet-flat" and [y for _, y in samples] == [65, 970, 0]
    sets = data.real_label_sets(samples)  # timm's ReaL copy: entry i is val image i+1
    assert sets[0] == [] and sets[1] == [970, 795]


def test_real_labels_that_do_not_cover_the_images_are_refused_when_the_data_is_found(tmp_path):
    """A hostile pass: a short --real-labels file was refused only after the speed timing (minutes for DeiT-B)."""
    from bench.accuracy import find_eval_data

    root = tmp_path / "val"
    jpeg(root / "ILSVRC2012_val_00000007.JPEG", seed=7)
    (tmp_path / data.LABELS_NAME).write_text("ILSVRC2012_val_00000007.JPEG 3\n")
    (tmp_path / "short.json").write_text("[[1], [2]]")
    model = nn.Linear(2, 1000)
    model.num_classes = 1000
    opts = EvalOptions(data=root, pretrained=True, real_labels=str(tmp_path / "short.json"))
    with pytest.raises(data.DataError, match="holds 2 label sets; ILSVRC2012_val_00000007.JPEG needs entry 7"):
        find_eval_data(model, opts, None)
    assert len(find_eval_data(model, dataclasses.replace(opts, real_labels="timm"), None).samples) == 1


def test_a_flat_folder_without_labels_says_how_to_give_them(tmp_path):
    jpeg(tmp_path / "val" / "ILSVRC2012_val_00000001.JPEG", seed=0)
    with pytest.raises(data.DataError, match="--labels FILE"):
        data.find_samples(tmp_path / "val")


def test_a_folder_given_as_the_labels_file_is_named_as_a_folder(tmp_path):
    """A hostile pass: it said "no such file"."""
    jpeg(tmp_path / "val" / "ILSVRC2012_val_00000001.JPEG", seed=0)
    with pytest.raises(data.DataError, match=f"--labels {tmp_path}: a folder, not a file"):
        data.find_samples(tmp_path / "val", labels_file=tmp_path)


def test_real_scores_any_top_k_hit_and_leaves_out_empty_sets():
    preds = Predictions(["a", "b", "c", "d"], torch.tensor([0, 1, 2, 3]),
                        {"": torch.tensor([[5, 1, 2, 3, 4], [1, 0, 2, 3, 4], [9, 8, 7, 6, 5], [3, 2, 1, 0, 4]])}, 4.0)
    out = scores(preds, real_sets=[[1], [7, 1], [], [4]])
    assert out["real_images"] == 3
    assert out["real_top1"] == pytest.approx(100 / 3)  # only image b's first guess is in its set
    assert out["real_top5"] == pytest.approx(100.0)
    assert out["top1"] == pytest.approx(50.0) and out["loss"] == 1.0


def official_eval(size: int):
    """The DeiT repo's eval transform (datasets.py: build_transform, is_train=False), written out."""
    return transforms.Compose([transforms.Resize(int(size / 0.875), interpolation=3), transforms.CenterCrop(size),
                               transforms.ToTensor(), transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    """A real photograph when ../shared/datasets is present, else a made JPEG of the same size."""
    out = tmp_path_factory.mktemp("photo")
    archive = SHARED / "imagenet-val-1300.tar.gz"
    if archive.exists():
        with tarfile.open(archive) as tar:
            member = next(m for m in tar if m.name.endswith(".JPEG"))
            tar.extract(member, out, filter="data")
            return out / member.name
    return jpeg(out / "made.jpg", seed=1, size=(227, 227))


@pytest.mark.parametrize("variant,size", [("deit_ti", 224), ("deit_b_384", 384)])
def test_the_official_protocol_gives_the_official_pipelines_tensors(photo, variant, size):
    p = data.preprocess(VARIANTS[variant].build(), size, "official")
    with Image.open(photo) as img:
        ours, theirs = data.build_transform(p)(img.convert("RGB")), official_eval(size)(img.convert("RGB"))
    assert torch.equal(ours, theirs) and p.resize_size == int(size / 0.875)


@pytest.mark.parametrize("variant,crop", [("deit_ti", 0.9), ("deit_b_384", 1.0)])
def test_the_timm_protocol_gives_timms_tensors(photo, variant, crop):
    from timm.data import create_transform, resolve_data_config

    model = VARIANTS[variant].build()
    p = data.preprocess(model, VARIANTS[variant].img_size, "timm")
    with Image.open(photo) as img:
        ours = data.build_transform(p)(img.convert("RGB"))
        theirs = create_transform(**resolve_data_config({}, model=model))(img.convert("RGB"))
    assert p.crop_pct == crop and torch.equal(ours, theirs)


def test_a_file_named_like_a_release_must_hash_to_its_prefix(tmp_path):
    good = tmp_path / "weights.pth"
    torch.save({"model": {"head.weight": torch.zeros(10, 4)}}, good)
    prefix = checkpoint.sha256_of(good)[:8]
    named = good.rename(tmp_path / f"deit_tiny_patch16_224-{prefix}.pth")
    assert checkpoint.read_state_dict(named)[1].num_classes == 10
    wrong = named.rename(tmp_path / "deit_tiny_patch16_224-a1311bcf.pth")
    with pytest.raises(checkpoint.CheckpointError, match="hashes to"):
        checkpoint.read_state_dict(wrong)


def test_safetensors_and_plain_state_dicts_load(tmp_path):
    from safetensors.torch import save_file

    model = VARIANTS["debug"].build()
    save_file(model.state_dict(), tmp_path / "w.safetensors")
    torch.save({f"module.{k}": v for k, v in model.state_dict().items()}, tmp_path / "ddp.pth")
    for name in ("w.safetensors", "ddp.pth"):
        state, info = checkpoint.read_state_dict(tmp_path / name)
        checkpoint.load_into(VARIANTS["debug"].build(), state, name)
        assert info.num_classes == 10 and not info.official


@pytest.mark.parametrize("case,message", [
    ("missing_folder", "is not a folder"),
    ("empty_folder", "no images"),
    ("unreadable_image", "cannot read image"),
    ("corrupt_checkpoint", "is truncated or corrupt"),
    ("wrong_keys", "unexpected keys (3): dist_token"),
    ("head_vs_num_classes", "the checkpoint's head has 10 classes"),
    ("labels_beyond_head", "has 10 class folders (c0, c1, c2, c3, c4 …) but the model has only 5 classes"),
    ("no_weights", "needs weights"),
])
def test_bad_inputs_exit_2_with_a_clear_message(capsys, tmp_path, ten_class_tree, case, message):
    ckpt = known_checkpoint(tmp_path / "k.pth")
    args = ["--variant", "debug_dist", "--metrics", "accuracy", "--data", str(ten_class_tree), "--checkpoint", str(ckpt)]
    if case == "missing_folder":
        args[5] = str(tmp_path / "nowhere")
    elif case == "empty_folder":
        (tmp_path / "empty" / "c0").mkdir(parents=True)
        args[5] = str(tmp_path / "empty")
    elif case == "unreadable_image":
        (ten_class_tree / "c1" / "broken.jpg").write_bytes(b"not a jpeg at all")
        args += ["--workers", "2"]  # the error crosses a DataLoader worker
    elif case == "corrupt_checkpoint":
        ckpt.write_bytes(ckpt.read_bytes()[:200])
    elif case == "wrong_keys":
        args[1] = "debug"
    elif case == "head_vs_num_classes":
        args += ["--num-classes", "1000"]
    elif case == "labels_beyond_head":
        small = VARIANTS["debug_dist"].build(num_classes=5)
        torch.save(small.state_dict(), ckpt)
    elif case == "no_weights":
        args = args[:-2]
    code, _, err = run_json(capsys, *args, "--results-dir", str(tmp_path / "r"))
    assert code == 2 and message in err and "Traceback" not in err, err
    assert not (tmp_path / "r").exists()


def test_pretrained_without_network_says_to_pass_a_checkpoint(monkeypatch):
    import timm

    def offline(*args, **kwargs):
        raise OSError("Network is unreachable")

    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(checkpoint.CheckpointError, match="pass --checkpoint FILE"):
        checkpoint.load_pretrained("deit_tiny_patch16_224")


def test_torchrun_on_two_processes_counts_every_image_once_and_agrees_with_one(tmp_path, ten_class_tree):
    ckpt = known_checkpoint(tmp_path / "k.pth")
    common = ["run", "--variant", "debug_dist", "--device", "cpu", "--precision", "fp32", "--metrics", "accuracy",
              "--data", str(ten_class_tree), "--checkpoint", str(ckpt), "--workers", "0", "--json"]
    single = subprocess.run([sys.executable, "-m", "bench", *common, "--results-dir", str(tmp_path / "one"),
                             "--save-predictions", str(tmp_path / "one.pt")], capture_output=True, text=True, timeout=300)
    multi = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
                            "-m", "bench", *common, "--results-dir", str(tmp_path / "two"),
                            "--save-predictions", str(tmp_path / "two.pt")], capture_output=True, text=True, timeout=300)
    assert single.returncode == 0 and multi.returncode == 0, multi.stderr[-2000:]
    one, two = json.loads(single.stdout)["metrics"], json.loads(multi.stdout)["metrics"]
    assert two["images"] == one["images"] == 11
    speeds = {"eval_img_per_s", "eval_img_per_s_steady"}
    assert {k: v for k, v in two.items() if k not in speeds} == pytest.approx(
        {k: v for k, v in one.items() if k not in speeds})
    a, b = Predictions.load(tmp_path / "one.pt"), Predictions.load(tmp_path / "two.pt")
    assert a.names == b.names and torch.equal(a.targets, b.targets)
    assert len(list((tmp_path / "two").iterdir())) == 1  # rank 0 alone wrote a record


def test_disagreement_is_the_fraction_of_images_with_different_top1(tmp_path, capsys):
    names = ["a", "b", "c", "d"]
    Predictions(names, torch.tensor([0, 1, 2, 3]), {"": torch.tensor([[0], [1], [2], [0]])}, 0.0).save(tmp_path / "cnn.pt")
    # the same images in another order: distilled model, class head right on a and b only
    Predictions(["d", "c", "b", "a"], torch.tensor([3, 2, 1, 0]),
                {"cls": torch.tensor([[1], [1], [1], [0]]), "dist": torch.tensor([[0], [2], [1], [0]]),
                 "fused_logits": torch.tensor([[0], [2], [1], [0]]), "fused_probs": torch.tensor([[0], [2], [1], [0]])},
                0.0).save(tmp_path / "deit.pt")
    code = cli.main(["disagree", str(tmp_path / "cnn.pt"), str(tmp_path / "deit.pt"), "--json"])
    matrix = json.loads(capsys.readouterr().out)
    assert code == 0 and set(matrix) == {"ground truth", "cnn", "deit class", "deit distil", "deit class+distil"}
    assert matrix["ground truth"]["cnn"] == 0.25
    assert matrix["ground truth"]["deit class"] == 0.5
    assert matrix["cnn"]["deit distil"] == 0.0 and matrix["deit class"]["deit distil"] == 0.5
    assert cli.main(["disagree", str(tmp_path / "nope.pt")]) == 2


def test_prediction_files_of_one_name_are_told_apart_by_their_folders(tmp_path, capsys):
    # training runs all write predictions.pt; the columns must not overwrite each other
    for run, top1 in (("teacher", [0, 1]), ("seed0/none", [0, 0]), ("seed0/hard", [1, 1])):
        Predictions(["a", "b"], torch.tensor([0, 1]), {"": torch.tensor([[t] for t in top1])}, 0.0).save(
            tmp_path / run / "predictions.pt")
    files = [str(tmp_path / run / "predictions.pt") for run in ("teacher", "seed0/none", "seed0/hard")]
    assert cli.main(["disagree", *files, "--json"]) == 0
    matrix = json.loads(capsys.readouterr().out)
    assert set(matrix) == {"ground truth", "teacher", "seed0/none", "seed0/hard"}
    assert matrix["teacher"]["seed0/none"] == 0.5 and matrix["seed0/none"]["seed0/hard"] == 1.0
    assert cli.main(["disagree", files[0], files[0]]) == 2
    assert "given twice" in capsys.readouterr().err


def test_images_with_one_file_name_in_several_class_folders_stay_apart(tmp_path, capsys):
    # CIFAR-10's JPEG tree has 0001.jpg in every class folder; Table 4 must not merge them
    root = folder_tree(tmp_path / "data", {"cat": 2, "dog": 2})
    ckpt = known_checkpoint(tmp_path / "k.pth", variant="debug", class_names=CIFAR10)
    code, _, err = run_json(capsys, "--variant", "debug", "--metrics", "accuracy", "--data", str(root),
                            "--checkpoint", str(ckpt), "--results-dir", str(tmp_path / "r"),
                            "--save-predictions", str(tmp_path / "p.pt"))
    assert code == 0, err
    saved = Predictions.load(tmp_path / "p.pt")
    assert saved.names == ["cat/0.jpg", "cat/1.jpg", "dog/0.jpg", "dog/1.jpg"]
    # and how they were made, for bench disagree to name what differs between files (a hostile pass)
    assert saved.made["precision"] == "fp32" and saved.made["preprocess"]["protocol"] == "official"
    assert saved.made["model"] == "deit_tiny_patch16_224" and saved.made["img_size"] == 32


def test_per_batch_normalisation_equals_the_per_image_pipeline_exactly(photo):
    p = data.preprocess(VARIANTS["deit_ti"].build(), 224, "official")
    with Image.open(photo) as img:
        full = data.build_transform(p)(img.convert("RGB"))
        raw = data.build_transform(p, normalize=False)(img.convert("RGB"))
    assert raw.dtype == torch.uint8
    assert torch.equal(data.normalize_batch(raw[None], p)[0], full)


def random_checkpoint(path: Path, variant="debug") -> Path:
    """Random weights (seeded): unlike known_checkpoint's constant logits, bf16 moves their loss."""
    torch.manual_seed(0)
    torch.save(VARIANTS[variant].build().state_dict(), path)
    return path


def test_on_a_cpu_with_native_bf16_accuracy_is_still_evaluated_in_fp32_by_default(capsys, tmp_path, ten_class_tree,
                                                                                 monkeypatch):
    """Issue #30: `--precision auto` evaluated in bf16 on an avx512_bf16 CPU (94.33 % against 97.00 % in fp32)."""
    from test_machine import AVX512_BF16

    from bench import machine

    bf16_cpu, real = machine.cpuinfo(AVX512_BF16), machine.detect
    monkeypatch.setattr(machine, "detect", lambda device="cpu", threads=None, info=None:
                        real(device, threads, bf16_cpu))
    ckpt = random_checkpoint(tmp_path / "random.pth")

    def evaluate(*precision):
        code = cli.main(["run", "--variant", "debug", "--device", "cpu", "--metrics", "accuracy", *precision,
                         "--data", str(ten_class_tree), "--checkpoint", str(ckpt), "--workers", "0", "--json",
                         "--results-dir", str(tmp_path / "r")])
        out, err = capsys.readouterr()
        assert code == 0, err
        return json.loads(out)

    default, fp32, bf16 = evaluate(), evaluate("--precision", "fp32"), evaluate("--precision", "amp_bf16")
    assert default["settings"]["precision"] == "amp_bf16"  # what `auto` picks for timing on this CPU
    assert default["settings"]["accuracy_precision"] == fp32["settings"]["accuracy_precision"] == "fp32"
    assert default["metrics"]["loss"] == fp32["metrics"]["loss"]  # evaluated exactly as in fp32
    assert bf16["settings"]["accuracy_precision"] == "amp_bf16" and bf16["metrics"]["loss"] != fp32["metrics"]["loss"]


def test_the_summary_says_which_precision_accuracy_ran_in(capsys, tmp_path, ten_class_tree):
    ckpt = random_checkpoint(tmp_path / "random.pth")
    assert cli.main(["run", "--variant", "debug", "--device", "cpu", "--metrics", "accuracy", "--data",
                     str(ten_class_tree), "--checkpoint", str(ckpt), "--workers", "0",
                     "--results-dir", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert "accuracy in fp32: accuracy's default on every machine" in out
    assert "\nprecision " not in out  # nothing was timed, so the timing precision is not announced


@pytest.mark.parametrize("content, message", [
    (None, "cannot read --real-labels"),
    ("root:x:0:0", "is not JSON"),
    ('{"a": 1}', "is not a JSON list with one list of class indices"),
    ("[[1], [2]]", "holds 2 label sets; ILSVRC2012_val_00000003.JPEG needs entry 3"),
    ("[[1], [2, 1000], [3]]", r"entry 2 holds \[2, 1000\]; ReaL labels are ImageNet-1k classes, 0 to 999"),
    ("[[-1], [2], [3]]", r"entry 1 holds \[-1\]"),
])
def test_a_bad_real_labels_file_is_refused_naming_it(tmp_path, content, message):
    """A hostile pass: FileNotFoundError, JSONDecodeError, KeyError and IndexError tracebacks for these; a class
    index beyond ImageNet-1k's scored 0 instead."""
    path = tmp_path / "real.json"
    if content is not None:
        path.write_text(content)
    samples = [(tmp_path / f"ILSVRC2012_val_{i:08d}.JPEG", 0) for i in (1, 3)]
    with pytest.raises(data.DataError, match=message):
        data.real_label_sets(samples, path)
    if content is None:
        with pytest.raises(ValueError, match="cannot read --real-labels"):  # before any timing, with the options
            EvalOptions(data=tmp_path, pretrained=True, real_labels=str(path)).check()


def test_real_labels_for_a_model_without_imagenet_classes_are_refused_before_timing(capsys, tmp_path,
                                                                                   ten_class_tree):
    """ReaL relabels ImageNet-1k: a 10-class model scored 0 against it."""
    ckpt = random_checkpoint(tmp_path / "random.pth")
    code = cli.main(["run", "--variant", "debug", "--device", "cpu", "--data", str(ten_class_tree), "--checkpoint",
                     str(ckpt), "--real-labels", "timm", "--workers", "0", "--results-dir", str(tmp_path / "r")])
    assert code == 2 and not (tmp_path / "r").exists()
    err = capsys.readouterr().err
    assert "--real-labels scores ImageNet-1k classes; the model has 10 classes" in err and "timing" not in err


def test_an_image_name_linking_to_nothing_is_refused_not_skipped(tmp_path):
    """A broken link in a flat val folder was skipped without a word: 1 of 2 images evaluated."""
    folder = tmp_path / "val"
    folder.mkdir()
    jpeg(folder / "ILSVRC2012_val_00000001.JPEG", 0)
    (folder / "ILSVRC2012_val_00000002.JPEG").symlink_to(tmp_path / "gone.JPEG")
    with pytest.raises(data.DataError, match="not image files .*, e.g. ILSVRC2012_val_00000002.JPEG"):
        data.guess_layout(folder)
    (folder / "ILSVRC2012_val_00000002.JPEG").unlink()
    (folder / "ILSVRC2012_val_00000002.JPEG").symlink_to(folder / "ILSVRC2012_val_00000002.JPEG")  # a loop
    with pytest.raises(data.DataError, match="a link loop"):
        data.guess_layout(folder)
    (folder / "ILSVRC2012_val_00000002.JPEG").unlink()
    (folder / "ILSVRC2012_val_00000002.JPEG").mkdir()  # a folder named like an image
    with pytest.raises(data.DataError, match="ILSVRC2012_val_00000002.JPEG"):
        data.guess_layout(folder)


def test_labels_files_that_cannot_be_read_as_given_are_refused_by_name(tmp_path):
    """A hostile pass: label -1 ended in a traceback, a missing --labels FILE was told to pass --labels, and --labels
    beside a class-per-folder tree went unread."""
    root = tmp_path / "val"
    jpeg(root / "ILSVRC2012_val_00000001.JPEG", seed=1)
    labels = tmp_path / "mine.txt"
    labels.write_text("ILSVRC2012_val_00000001.JPEG -1\n")
    with pytest.raises(data.DataError, match="mine.txt:1: class index -1 is negative"):
        data.find_samples(root, labels_file=labels)
    with pytest.raises(data.DataError, match="--labels .*absent.txt: no such file"):
        data.find_samples(root, labels_file=tmp_path / "absent.txt")
    tree = folder_tree(tmp_path / "tree", {"cat": 1, "dog": 1})
    with pytest.raises(data.DataError, match="--labels is read only for the flat ILSVRC2012 layout"):
        data.find_samples(tree, labels_file=labels)


def test_a_predictions_file_is_never_replaced_and_num_classes_must_be_positive(tmp_path, capsys, ten_class_tree):
    ckpt = known_checkpoint(tmp_path / "k.pth")
    (tmp_path / "p.pt").write_bytes(b"an earlier run's predictions")
    args = ["--variant", "debug", "--metrics", "accuracy", "--data", str(ten_class_tree), "--checkpoint", str(ckpt),
            "--results-dir", str(tmp_path / "r")]
    code, _, err = run_json(capsys, *args, "--save-predictions", str(tmp_path / "p.pt"))
    assert code == 2 and "p.pt exists; predictions files are never replaced" in err
    assert (tmp_path / "p.pt").read_bytes() == b"an earlier run's predictions"
    code, _, err = run_json(capsys, *args, "--num-classes", "0")
    assert code == 2 and "--num-classes must be >= 1, got 0" in err


def test_a_users_checkpoint_gets_no_delta_against_the_papers_top1(tmp_path, capsys):
    """A hostile pass: random weights on 20 images showed "-72.20 pt" against the paper's 50,000-image top-1."""
    root = tmp_path / "val"
    for i in (1, 2):
        jpeg(root / f"ILSVRC2012_val_{i:08d}.JPEG", seed=i)
    (tmp_path / data.LABELS_NAME).write_text("ILSVRC2012_val_00000001.JPEG 65\nILSVRC2012_val_00000002.JPEG 970\n")
    torch.save(VARIANTS["deit_ti"].build().state_dict(), tmp_path / "mine.pth")
    code = cli.main(["run", "--device", "cpu", "--variant", "deit_ti", "--metrics", "accuracy", "--data", str(root),
                     "--checkpoint", str(tmp_path / "mine.pth"), "--workers", "0", "--results-dir", str(tmp_path / "r")])
    out = capsys.readouterr().out
    top1 = next(line for line in out.splitlines() if line.startswith("| top-1 %  "))
    assert code == 0 and "72.2" in top1 and "not compared: not the paper's weights" in top1 and " pt " not in top1


def test_limit_evaluates_a_few_images_spread_over_the_classes_and_says_so(tmp_path, capsys, ten_class_tree):
    """A hostile pass: "a few real images" meant building a folder by hand. --limit N takes N, evenly spread (the
    first N of a tree are one class)."""
    ckpt = known_checkpoint(tmp_path / "k.pth")
    args = ["--variant", "debug_dist", "--metrics", "accuracy", "--data", str(ten_class_tree), "--checkpoint",
            str(ckpt), "--results-dir", str(tmp_path / "r")]
    code, rec, err = run_json(capsys, *args, "--limit", "5")
    assert code == 0, err
    assert rec["metrics"]["images"] == 5 and rec["settings"]["eval"]["limit"] == 5
    assert rec["settings"]["eval"]["classes_present"] == 3  # c0, c1, c2 of the 11 sorted images, not c0 alone
    code, _, err = run_json(capsys, *args, "--limit", "0")
    assert code == 2 and "--limit must be >= 1, got 0" in err
    code = cli.main(["run", "--device", "cpu", "--variant", "debug", "--metrics", "size", "--limit", "5",
                     "--results-dir", str(tmp_path / "r")])
    assert code == 2 and "--limit sets how accuracy is measured" in capsys.readouterr().err  # accuracy reads it
