"""PyTorch float64 references for the compiled kernels' tests. Helpers, not tests."""

import numpy as np
import torch


def conv_epilogue(x, w, b=None, scale=None, residual=None, relu=False, stride=1, padding=0,
                  dilation=1, groups=1) -> np.ndarray:
    """A convolution and its fused epilogue in float64: ``conv * scale + b (+ residual)``,
    rectified when ``relu`` (None: that operand left out)."""
    def t64(a):
        return torch.tensor(a, dtype=torch.float64)

    out = torch.nn.functional.conv2d(t64(x), t64(w), None, stride, padding, dilation, groups)
    if scale is not None:
        out = out * t64(scale)[:, None, None]
    if b is not None:
        out = out + t64(b)[:, None, None]
    if residual is not None:
        out = out + t64(residual)
    return (torch.relu(out) if relu else out).numpy()
