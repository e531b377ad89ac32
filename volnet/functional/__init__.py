"""Pure array kernels with no state: conv, pool, norm, loss; ``naive`` holds loop references."""

from volnet.functional.conv import col2im, conv2d_backward, conv2d_forward, conv_output_size, im2col
from volnet.functional.loss import softmax, softmax_cross_entropy, svm_hinge_loss
from volnet.functional.pool import (
                                    avgpool2d_backward,
                                    avgpool2d_forward,
                                    maxpool2d_backward,
                                    maxpool2d_forward,
)

__all__ = [
                                    "avgpool2d_backward",
                                    "avgpool2d_forward",
                                    "col2im",
                                    "conv2d_backward",
                                    "conv2d_forward",
                                    "conv_output_size",
                                    "im2col",
                                    "maxpool2d_backward",
                                    "maxpool2d_forward",
                                    "softmax",
                                    "softmax_cross_entropy",
                                    "svm_hinge_loss",
]
