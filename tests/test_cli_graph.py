"""The graph models through the command line: `clcnn train resnet20 / mobilenet-small` on an
image folder of colour images (built for its channels, classes and size, with crop-and-flip
augmentation), then summary, evaluate and predict on what it saved."""
import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import clcnn
from clcnn.cli.main import cli
from clcnn.serialization import read_archive


def _folder(root, classes=("apple", "kiwi"), per_class=12, size=12, seed=0):
    """Colour images whose class is their dominant colour, so a net can learn them."""
    rng = np.random.default_rng(seed)
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for k in range(per_class):
            image = rng.integers(0, 80, (size, size, 3), dtype=np.uint8)
            image[..., c] += 150
            Image.fromarray(image).save(root / name / f"{k:02d}.png")
    return root


def _invoke(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("model", ["resnet20", "mobilenet-small"])
def test_graph_model_trains_on_an_image_folder_and_its_checkpoint_serves_every_verb(model, tmp_path):
    data = _folder(tmp_path / "fruit")
    out = tmp_path / "run"
    _invoke("train", model, "--dataset", data, "--epochs", "2", "--batch-size", "8", "--augment",
            "--lr", "0.05", "--quiet", "--out", out, "--validation-split", "0.2")
    header, _ = read_archive(out / "best.clcnn")
    meta = header["metadata"]
    assert meta["class_names"] == ["apple", "kiwi"] and meta["input_shape"] == [3, 12, 12]
    assert len(meta["preprocess"]["mean"]) == 3                # measured per channel on the folder
    history = json.loads((out / "history.json").read_text())
    assert len(history) == 2 and all(np.isfinite(r["loss"]) for r in history)
    net = clcnn.load(out / "best.clcnn")
    assert isinstance(net, clcnn.Model) and net.output_shapes()[-1] == (2,)
    assert "Input" in _invoke("summary", out / "best.clcnn")
    report = json.loads(_invoke("evaluate", out / "best.clcnn", "--json"))
    assert report["n"] == 4 and 0 <= report["accuracy"] <= 1    # 20% of each class (2 of 12) held out
    predicted = _invoke("predict", out / "best.clcnn", data / "kiwi" / "00.png", "--json")
    row = json.loads(predicted)["predictions"][0]
    assert row["label"] in ("apple", "kiwi")


def test_a_chain_model_refuses_images_of_another_size_in_one_line(tmp_path):
    data = _folder(tmp_path / "fruit", size=40)
    result = CliRunner().invoke(cli, ["train", "lenet5", "--dataset", str(data), "--epochs", "1",
                                      "--out", str(tmp_path / "run")])
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "lenet5 takes 32x32 images" in result.output and "resnet20" in result.output
