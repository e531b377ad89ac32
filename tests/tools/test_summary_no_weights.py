"""Issue 15, item 9: a summary is computed from shapes alone and allocates no weights;
real initialisation draws in float32 instead of drawing float64 and casting."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import volnet as vn
from volnet import init
from volnet.models.registry import INPUT_SHAPES, MODELS

ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]

# peak resident memory of this process image (VmHWM); unlike ru_maxrss it does not carry
# the high-water mark of the forking pytest process across exec
PEAK = ("(lambda: int(next(l.split()[1] for l in open('/proc/self/status') "
        "if l.startswith('VmHWM'))) * 1024)")

SCRIPT = """
import json, sys
import volnet as vn
from volnet.init import shapes_only
from volnet.models.registry import INPUT_SHAPES, MODELS
peak = """ + PEAK + """
before = peak()
weights = {}
for name in MODELS:
    with shapes_only():
        net = vn.models.build(name)
    weights[name] = sum(p.nbytes for _, p, _ in net.named_params())
    vn.summary(net, INPUT_SHAPES[name])
    del net
grown = peak() - before
print(json.dumps({"grown": grown, "weights": weights}))
"""


pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/status"),
                                reason="peak memory is read from Linux's /proc")


def test_item9_summary_of_every_zoo_model_allocates_no_weights():
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                         check=True, cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": ""}).stdout
    result = json.loads(out)
    assert result["weights"]["vgg19"] > 500e6        # what drawing the weights would take
    # peak memory grew by less than the smallest big model's weights (resnet18: 46 MB)
    assert result["grown"] < result["weights"]["resnet18"], result["grown"]


def test_item9_volnet_summary_vgg16_does_not_hold_its_weights():
    code = ("import sys; from volnet.cli import main; rc = main(['summary', 'vgg16']); "
            f"print({PEAK}(), file=sys.stderr)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": ""})
    assert "138,357,544" in proc.stdout
    assert int(proc.stderr.strip().splitlines()[-1]) < 300e6   # VGG-16's weights: 553 MB


@pytest.mark.parametrize("name", ["lenet5", "googlenet", "context_module", "pattern"])
def test_item9_shapes_only_gives_the_same_table(name):
    real = vn.summary(MODELS[name](), INPUT_SHAPES[name])
    with init.shapes_only():
        fast = vn.summary(MODELS[name](), INPUT_SHAPES[name])
    assert str(fast) == str(real)


def test_item9_he_normal_draws_float32_directly_with_the_right_spread():
    shape = (256, 64, 3, 3)
    w = init.he_normal(shape, np.random.default_rng(0))
    expected = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
    assert w.dtype == np.float32
    np.testing.assert_allclose(w, expected * np.sqrt(2 / (64 * 9)), rtol=1e-6)
    assert w.std() == pytest.approx(np.sqrt(2 / (64 * 9)), rel=0.01)
    w64 = init.he_normal((1000, 50), np.random.default_rng(1), dtype=np.float64)
    assert w64.dtype == np.float64 and w64.std() == pytest.approx(0.2, rel=0.02)
    # the flag is restored after the block, even after an error
    with pytest.raises(RuntimeError), init.shapes_only():
        raise RuntimeError
    assert init.he_normal((3, 3), np.random.default_rng(0)).any()
