"""Non-trivial batch norm statistics for tests that compare a network's evaluation mode
across paths (planned and unplanned, fused and not, volnet and PyTorch, ONNX in and out):
with fresh statistics (mean 0, variance 1) a folded batch norm is nearly the identity and
hides mistakes in the folding."""


def randomise_norm_stats(net, rng, spread=0.1):
    """Give every batch norm in ``net`` random running statistics and affine parameters:
    mean and bias normal(0, ``spread``), variance and weight uniform(0.5, 1.5), drawn in
    layer order. Returns ``net``."""
    for _, layer in net.named_layers():
        if "running_mean" in layer.buffers:
            c = layer.buffers["running_mean"].shape
            layer.buffers["running_mean"][...] = rng.normal(0, spread, c)
            layer.buffers["running_var"][...] = rng.uniform(0.5, 1.5, c)
            layer.params["weight"][...] = rng.uniform(0.5, 1.5, c)
            layer.params["bias"][...] = rng.normal(0, spread, c)
    return net
