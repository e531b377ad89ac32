"""`volnet segment` checks the network's working memory before the forward pass: a large image
is refused within the budget instead of allocating gigabytes, and the estimate is an upper
bound of what the forward really allocates (tracemalloc, NumPy reference path)."""

import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import volnet
from volnet.cli import main
from volnet.runtime import backend
from volnet.tools.segment_image import inference_bytes, predict_mask, segmentation_checkpoint

FRONTEND = Path(volnet.__file__).parent / "data" / "segmenters" / "dilated.safetensors"


def test_large_image_refused_before_the_forward_pass(tmp_path, capsys):
    image = tmp_path / "big.png"
    Image.fromarray(np.zeros((1200, 1600), np.uint8)).save(image)
    out = tmp_path / "overlay.png"
    code = main(["--max-bytes", "64M", "segment", str(FRONTEND), str(image), "--out", str(out)])
    assert code == 2
    err = capsys.readouterr().err
    assert "1600x1200" in err and "budget" in err
    assert not out.exists()


@pytest.mark.parametrize("name", ["dilated", "dilated-context"])
def test_estimate_bounds_the_measured_peak(name):
    net = segmentation_checkpoint(str(FRONTEND.with_name(f"{name}.safetensors")))
    image = np.random.default_rng(0).integers(0, 256, (1, 96, 128), dtype=np.uint8)
    estimate = inference_bytes(net, (1, 96, 128))
    with backend.use_kernels("numpy"):
        tracemalloc.start()
        try:
            predict_mask(net, image)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert peak <= estimate, (peak, estimate)
    assert estimate <= 8 * peak      # an estimate, not a blanket refusal
