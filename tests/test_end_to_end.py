"""Issue 15, done-when: a network written in Python is trained, saved, reloaded, evaluated,
predicted and fine-tuned with the CLI and the API interchangeably, on a generated image
folder; each step's numbers agree between the two."""

import re

import numpy as np
from new_user_data import make_shapes_folder

import volnet as vn
from volnet.cli import main
from volnet.data.images import load_image
from volnet.train.evaluation import evaluate
from volnet.train.finetune import finetune


def api_inputs(net, x):
    """Images (uint8) prepared as the checkpoint records: scaled, normalised."""
    prep = net.preprocessing
    return vn.data.BatchIterator(x, np.zeros(len(x), np.int64), mean=prep["mean"],
                                 std=prep["std"]).transform(x)


def cli_accuracy(text):
    return float(re.search(r"accuracy (\d\.\d+)", text).group(1))


def test_python_network_through_cli_and_api(tmp_path, capsys):
    shapes = make_shapes_folder(tmp_path / "shapes", (30, 10))
    data = vn.data.load_dataset(str(shapes), (3, 16, 16))
    net = vn.Sequential(vn.Conv2d(3, 8, 3, padding=1, rng=0), vn.ReLU(), vn.MaxPool2d(2),
                        vn.Conv2d(8, 8, 3, padding=1, rng=1), vn.ReLU(), vn.MaxPool2d(2),
                        vn.Flatten(), vn.Linear(8 * 4 * 4, 3, rng=2))

    # train in Python, save, reload
    history = vn.fit(net, data.x_train, data.y_train, epochs=6, batch_size=16,
                     optimizer=vn.Adam(lr=3e-3), mean=data.mean, std=data.std,
                     class_names=data.class_names, val=(data.x_test, data.y_test),
                     progress=False)
    assert history["val_accuracy"][-1] > 0.6                  # chance is 1/3
    path = vn.save(tmp_path / "net.safetensors", net)
    again = vn.load(path)
    x_test = api_inputs(again, data.x_test)
    np.testing.assert_array_equal(again.forward(x_test), net.forward(x_test))

    # evaluate: the CLI prints what the API computes (and what fit reported)
    assert main(["evaluate", path, "--data", str(shapes)]) == 0
    api = evaluate(again, x_test, data.y_test)["accuracy"]
    assert cli_accuracy(capsys.readouterr().out) == round(api, 4)
    assert api == history["val_accuracy"][-1]

    # predict: the CLI's top class is the API's, image by image
    files = sorted(str(p) for p in (shapes / "test").glob("*/00[0-2].png"))
    assert main(["predict", path, *files, "--top", "1"]) == 0
    cli = [line.split(": ")[1].split(" ")[0] for line in capsys.readouterr().out.splitlines()]
    images = np.stack([load_image(f, (3, 16, 16)) for f in files])
    api = [data.class_names[i] for i in again.predict(api_inputs(again, images)).argmax(1)]
    assert cli == api

    # fine-tune the Python network with the CLI on two new classes; check it in Python
    two = make_shapes_folder(tmp_path / "two", (30, 10), seed=1, shapes=("square", "triangle"))
    tuned_path = tmp_path / "tuned.safetensors"
    assert main(["finetune", path, "--data", str(two), "--train", "*", "--epochs", "3",
                 "--lr", "3e-3", "--quiet", "--out", str(tuned_path)]) == 0
    after = float(re.search(r"after (\d\.\d+)", capsys.readouterr().out).group(1))
    tuned = vn.load(tuned_path)
    two_data = vn.data.load_dataset(str(two), (3, 16, 16))
    assert tuned.preprocessing["class_names"] == ["square", "triangle"]
    assert tuned.preprocessing["mean"] == again.preprocessing["mean"]   # normalised as trained
    api = evaluate(tuned, api_inputs(tuned, two_data.x_test), two_data.y_test)["accuracy"]
    assert round(api, 3) == after

    # fine-tune in Python the checkpoint the CLI wrote; evaluate it with the CLI
    back = vn.load(tuned_path)
    finetune(back, two_data.x_train, two_data.y_train, train=("*",), epochs=1,
             mean=back.preprocessing["mean"], std=back.preprocessing["std"], progress=False)
    back_path = vn.save(tmp_path / "back.safetensors", back)
    assert main(["evaluate", back_path, "--data", str(two)]) == 0
    api = evaluate(back, api_inputs(back, two_data.x_test), two_data.y_test)["accuracy"]
    assert cli_accuracy(capsys.readouterr().out) == round(api, 4)
