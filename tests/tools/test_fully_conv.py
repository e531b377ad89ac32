"""FC -> CONV conversion and dense evaluation, checked against the definition:
the original network (with its FC layers) run on every crop, one crop at a time."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import volnet as vn
from volnet.layers.base import Layer
from volnet.models import cifar_example, lenet5
from volnet.models.vgg import VGG_CONFIGS, vgg, vgg16
from volnet.tools.dense import average_scores, crop_scores, infer_input_shape
from volnet.tools.fully_conv import FullyConvNet


def crops_one_by_one(net, image, step, size):
    """The definition: scores[k, i, j] = net(image[:, i*sh : i*sh+h, j*sw : j*sw+w])[k]."""
    (sh, sw), (h, w) = step, size
    rows, cols = (image.shape[1] - h) // sh + 1, (image.shape[2] - w) // sw + 1
    out = None
    for i in range(rows):
        for j in range(cols):
            scores = net.forward(image[None, :, i * sh:i * sh + h, j * sw:j * sw + w])[0]
            if out is None:
                out = np.zeros((scores.size, rows, cols), scores.dtype)
            out[:, i, j] = scores.ravel()
    return out


def close(a, b):
    """float32 agreement, relative to the scores' size."""
    return np.allclose(a, b, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(b).max())))


# ---- small networks without zero padding (dense = crop-by-crop exactly) ----------
def vgg_like():     # [CONV-RELU-POOL]x2 -> FC-RELU-DROPOUT -> FC; stride 4, input 3x28x28
    return vn.Sequential(vn.Conv2d(3, 4, 3, rng=1), vn.ReLU(), vn.MaxPool2d(2),
                         vn.Conv2d(4, 6, 3, rng=2), vn.ReLU(), vn.MaxPool2d(2), vn.Flatten(),
                         vn.Linear(6 * 5 * 5, 16, rng=3), vn.ReLU(), vn.Dropout(0.5, rng=4),
                         vn.Linear(16, 10, rng=5))


def odd_stride():   # stride 3: a 3x3 max pool with stride 3; input 2x14x14
    return vn.Sequential(vn.Conv2d(2, 5, 3, rng=1), vn.ReLU(), vn.MaxPool2d(3, stride=3),
                         vn.Flatten(), vn.Linear(5 * 4 * 4, 7, rng=2))


def nested():       # the head split over nested Sequentials with custom names; input 3x10x10
    return vn.Sequential({
        "features": vn.Sequential(vn.Sequential(vn.Conv2d(3, 4, 3, stride=2, rng=1), vn.Tanh()),
                                  vn.Sequential({"pool": vn.AvgPool2d(2)})),
        "head": vn.Sequential(vn.Flatten(), vn.Sequential(vn.Linear(4 * 2 * 2, 8, rng=2),
                                                          vn.LeakyReLU(0.1)),
                              vn.Linear(8, 6, rng=3)),
    })


def residual_gap():  # ResNet-style: residual block, global average pool, FC; input 3x12x12
    block = vn.Residual(vn.Sequential(vn.Conv2d(4, 4, 1, rng=3), vn.ReLU(), vn.Conv2d(4, 4, 1, rng=4)),
                        activation=vn.ReLU())
    return vn.Sequential(vn.Conv2d(3, 4, 3, rng=1), vn.ReLU(), vn.MaxPool2d(2), block,
                         vn.BatchNorm2d(4), vn.GlobalAvgPool2d(), vn.Flatten(), vn.Linear(4, 5, rng=2))


def concat_head():   # two FC branches on the same flattened volume, joined; input 2x7x7
    return vn.Sequential(vn.Conv2d(2, 3, 3, rng=1), vn.ReLU(),
                         vn.Concat(vn.Sequential(vn.Flatten(), vn.Linear(3 * 5 * 5, 4, rng=2)),
                                   vn.Sequential(vn.Flatten(), vn.Linear(3 * 5 * 5, 3, rng=3))),
                         vn.ReLU(), vn.Linear(7, 5, rng=4), vn.Softmax())


def bn_head():       # batch norm after a converted FC, with non-trivial statistics; input 3x9x9
    net = vn.Sequential(vn.Conv2d(3, 4, 3, rng=1), vn.ReLU(), vn.MaxPool2d(2), vn.Flatten(),
                        vn.Linear(4 * 3 * 3, 6, rng=2), vn.BatchNorm1d(6), vn.ReLU(),
                        vn.Linear(6, 4, rng=3))
    rng = np.random.default_rng(7)
    bn = net[5]
    bn.params["weight"][:] = rng.uniform(0.5, 2, 6)
    bn.params["bias"][:] = rng.standard_normal(6)
    bn.buffers["running_mean"][:] = rng.standard_normal(6)
    bn.buffers["running_var"][:] = rng.uniform(0.5, 3, 6)
    return net


def inception_like():  # FlatConcat branches (torchvision keys), an auxiliary SideBranch; 3x11x11
    from volnet.layers.flat_concat import FlatConcat
    from volnet.layers.side_branch import SideBranch

    block = FlatConcat({"a": vn.Sequential({"branch1x1": vn.Conv2d(4, 2, 1, rng=2)}),
                        "b": vn.Sequential({"branch_b": vn.Conv2d(4, 3, 1, rng=3), "relu": vn.ReLU()})})
    aux = SideBranch(vn.Sequential(vn.Flatten(), vn.Linear(4 * 4 * 4, 3, rng=4)))
    return vn.Sequential({"conv": vn.Conv2d(3, 4, 3, rng=1), "pool": vn.MaxPool2d(2), "aux": aux,
                          "mixed": block, "gap": vn.GlobalAvgPool2d(), "flat": vn.Flatten(),
                          "fc": vn.Linear(5, 6, rng=5)})


EXACT_NETS = [(vgg_like, (3, 28, 28), 4), (odd_stride, (2, 14, 14), 3), (nested, (3, 10, 10), 4),
              (residual_gap, (3, 12, 12), 2), (concat_head, (2, 7, 7), 1), (bn_head, (3, 9, 9), 2),
              (inception_like, (3, 11, 11), 2)]


def small_vgg16(**kwargs):   # VGG-16's spatial structure (13 CONV, 5 POOL) at 1/16 of the width
    config = [c if c == "M" else c // 16 for c in VGG_CONFIGS["vgg16"]]
    return vgg(config, hidden_features=64, **kwargs)


# ---- the conversion itself -------------------------------------------------------
def test_first_fc_becomes_a_conv_over_the_whole_volume_and_later_fcs_1x1():
    net = vgg_like()
    fc = vn.to_fully_conv(net, (3, 28, 28))
    assert isinstance(fc, FullyConvNet) and fc.stride == (4, 4) and fc.exact
    assert not any(isinstance(layer, vn.Flatten) for _, layer in fc.named_layers())
    first, last = fc["7"], fc["10"]
    assert (first.kernel_size, first.params["weight"].shape) == ((5, 5), (16, 6, 5, 5))
    assert (last.kernel_size, last.params["weight"].shape) == ((1, 1), (10, 16, 1, 1))
    # (C, H, W) order: input feature c*25 + h*5 + w feeds filter tap (c, h, w)
    w_fc, w_conv = net[7].params["weight"], first.params["weight"]
    for k, c, h, w in [(0, 0, 0, 1), (3, 2, 4, 0), (15, 5, 1, 3)]:
        assert w_conv[k, c, h, w] == w_fc[k, c * 25 + h * 5 + w]
    assert list(fc.state_dict()) == list(net.state_dict())   # same keys, FC weights reshaped


@pytest.mark.parametrize("factory, shape", [
    (vgg_like, (3, 28, 28)), (odd_stride, (2, 14, 14)), (nested, (3, 10, 10)),
    (residual_gap, (3, 12, 12)), (concat_head, (2, 7, 7)), (bn_head, (3, 9, 9)),
    (cifar_example, (3, 32, 32)), (lenet5, (1, 28, 28)), (small_vgg16, (3, 224, 224)),
])
def test_converted_net_gives_the_original_scores_at_the_native_size(factory, shape, rng):
    net = factory()
    x = rng.standard_normal((2, *shape)).astype(np.float32)
    out = vn.to_fully_conv(net, shape).forward(x)
    assert out.shape[2:] == (1, 1)
    assert close(out[:, :, 0, 0], net.forward(x))


def test_flat_concat_keeps_its_keys_and_side_branches_disappear():
    net = inception_like()
    fc = vn.to_fully_conv(net, (3, 11, 11))
    assert type(fc.mixed).__name__ == "FlatConcat"
    assert list(fc.state_dict()) == [k for k in net.state_dict() if not k.startswith("aux")]
    assert "aux" not in dict(fc.named_children())


def test_converting_a_converted_net_changes_nothing(rng):
    fc = vn.to_fully_conv(nested(), (3, 10, 10))
    again = vn.to_fully_conv(fc, (3, 10, 10))
    assert (again.stride, again.exact, list(again.state_dict())) == (fc.stride, fc.exact, list(fc.state_dict()))
    x = rng.standard_normal((1, 3, 19, 23)).astype(np.float32)
    np.testing.assert_array_equal(again.forward(x), fc.forward(x))


def test_converted_net_shares_no_arrays_with_the_original():
    net = bn_head()
    fc = vn.to_fully_conv(net, (3, 9, 9))
    old = [a for _, layer in net.named_layers() for a in (*layer.params.values(), *layer.buffers.values())]
    new = [a for _, layer in fc.named_layers() for a in (*layer.params.values(), *layer.buffers.values())]
    assert len(new) == len(old)
    assert not any(np.shares_memory(a, b) for a in old for b in new)
    before = net.state_dict()
    for array in new:
        array[...] = 0
    assert all(np.array_equal(before[k], v) for k, v in net.state_dict().items())


def test_batchnorm1d_after_fc_becomes_batchnorm2d_with_the_same_statistics():
    net = bn_head()
    bn = vn.to_fully_conv(net, (3, 9, 9))["5"]
    assert isinstance(bn, vn.BatchNorm2d)
    for key in ("weight", "bias"):
        np.testing.assert_array_equal(bn.params[key], net[5].params[key])
    for key in ("running_mean", "running_var"):
        np.testing.assert_array_equal(bn.buffers[key], net[5].buffers[key])


def test_global_average_pool_slides_as_a_stride_1_average_over_its_native_window():
    pool = vn.to_fully_conv(residual_gap(), (3, 12, 12))["5"]
    assert isinstance(pool, vn.AvgPool2d)
    assert (pool.kernel_size, pool.stride) == ((5, 5), (1, 1))


@pytest.mark.parametrize("pool, size, exact", [
    (vn.MaxPool2d(2), 9, True),                                # floor: the last row is dropped
    (vn.MaxPool2d(2, ceil_mode=True), 10, True),               # windows tile: ceil changes nothing
    (vn.MaxPool2d(2, ceil_mode=True), 9, False),               # a window hangs over the edge
    (vn.MaxPool2d(3, stride=2, padding=1), 9, False),          # padding
])
def test_exact_flag_says_whether_positions_see_only_their_crop(pool, size, exact, rng):
    net = vn.Sequential(vn.Conv2d(1, 2, 1, rng=1), pool, vn.Flatten())
    net.append(vn.Linear(int(np.prod(net.output_shape((1, size, size)))), 3, rng=2))
    fc = vn.to_fully_conv(net, (1, size, size))
    assert fc.exact is exact
    image = rng.standard_normal((1, size + 5, size + 4)).astype(np.float32)
    crops = crops_one_by_one(net, image, fc.stride, (size, size))
    assert close(vn.dense_scores(fc, image), crops) is exact
    assert close(vn.dense_scores(fc, image, exact=True), crops)


def test_float64_network_stays_float64():
    net = vgg_like().astype(np.float64)
    fc = vn.to_fully_conv(net, (3, 28, 28))
    assert {p.dtype for _, p, _ in fc.named_params()} == {np.dtype(np.float64)}
    image = np.random.default_rng(0).standard_normal((3, 30, 30))
    assert vn.dense_scores(fc, image).dtype == np.float64


# ---- dense evaluation = crop-by-crop -------------------------------------------------
@pytest.mark.parametrize("factory, shape, net_stride", EXACT_NETS)
def test_dense_map_equals_the_original_net_on_every_crop(factory, shape, net_stride, rng):
    net = factory()
    image = rng.standard_normal((shape[0], shape[1] + 2 * net_stride + 1,
                                 shape[2] + 3 * net_stride + 2)).astype(np.float32)
    scores = vn.dense_scores(net, image, input_shape=shape)
    # (H - h) // s + 1 rows: only crops that fit (the leftover pixels at the far edges are unused)
    assert scores.shape[1:] == ((2 * net_stride + 1) // net_stride + 1, (3 * net_stride + 2) // net_stride + 1)
    assert close(scores, crops_one_by_one(net, image, (net_stride, net_stride), shape[1:]))


def test_a_batch_gives_one_map_per_image(rng):
    net = vgg_like()
    images = rng.standard_normal((3, 3, 36, 33)).astype(np.float32)
    maps = vn.dense_scores(net, images, input_shape=(3, 28, 28))
    assert maps.shape == (3, 10, 3, 2)
    for image, scores in zip(images, maps):
        assert close(scores, crops_one_by_one(net, image, (4, 4), (28, 28)))


@pytest.mark.parametrize("factory, shape, step, passes", [
    (vgg_like, (3, 28, 28), 2, 4),        # 4 -> 2: shifts (0,0), (0,2), (2,0), (2,2)
    (vgg_like, (3, 28, 28), 1, 16),       # 4 -> 1: k = 4, 16 passes
    (vgg_like, (3, 28, 28), (2, 4), 2),   # finer along H only
    (vgg_like, (3, 28, 28), 6, 4),        # not a divisor: offsets 0 and 2 mod 4
    (vgg_like, (3, 28, 28), 8, 1),        # a multiple: one pass, every other position
    (odd_stride, (2, 14, 14), 1, 9),      # odd stride 3 -> 1
    (residual_gap, (3, 12, 12), 1, 4),
])
def test_shift_and_stitch_equals_crop_by_crop_at_the_finer_stride(factory, shape, step, passes, rng):
    net = factory()
    fc = vn.to_fully_conv(net, shape)
    calls = []
    forward = fc.forward
    fc.forward = lambda x, *a, **k: calls.append(x.shape) or forward(x, *a, **k)
    image = rng.standard_normal((shape[0], shape[1] + 9, shape[2] + 10)).astype(np.float32)
    scores = vn.dense_scores(fc, image, stride=step)
    sh, sw = (step, step) if isinstance(step, int) else step
    assert len(calls) == passes
    assert scores.shape[1:] == ((image.shape[1] - shape[1]) // sh + 1, (image.shape[2] - shape[2]) // sw + 1)
    assert close(scores, crops_one_by_one(net, image, (sh, sw), shape[1:]))


@settings(max_examples=20, deadline=None)
@given(kernel=st.integers(1, 3), pool=st.integers(1, 3), extra=st.tuples(st.integers(0, 7), st.integers(0, 7)),
       step=st.integers(1, 7), seed=st.integers(0, 2**16))
def test_dense_equals_crops_for_random_unpadded_nets(kernel, pool, extra, step, seed):
    rng = np.random.default_rng(seed)
    net = vn.Sequential(vn.Conv2d(2, 3, kernel, stride=(1, 2), rng=rng), vn.ReLU(),
                        vn.MaxPool2d(pool), vn.Flatten())
    size = (2, 8, 9)
    net.append(vn.Linear(int(np.prod(net.output_shape(size))), 4, rng=rng))
    image = rng.standard_normal((2, size[1] + extra[0], size[2] + extra[1])).astype(np.float32)
    assert close(vn.dense_scores(net, image, step, size),
                 crops_one_by_one(net, image, (step, step), size[1:]))


def test_average_scores_is_the_mean_softmax_over_crops(rng):
    net = odd_stride()
    image = rng.standard_normal((2, 20, 17)).astype(np.float32)
    crops = crops_one_by_one(net, image, (1, 1), (14, 14))
    probs = np.exp(crops - crops.max(axis=0)) / np.exp(crops - crops.max(axis=0)).sum(axis=0)
    assert close(average_scores(net, image, 1, (2, 14, 14)), probs.mean(axis=(1, 2)))
    assert close(average_scores(net, image, 1, (2, 14, 14), probabilities=False), crops.mean(axis=(1, 2)))


def test_crop_scores_is_the_definition(rng):
    net = vgg_like()
    image = rng.standard_normal((2, 3, 33, 31)).astype(np.float32)
    scores = crop_scores(net, image, 3, (3, 28, 28), batch_size=2)
    for one, expected in zip(scores, image):
        assert close(one, crops_one_by_one(net, expected, (3, 3), (28, 28)))


# ---- the lecture's CIFAR example and VGG-16 (both zero-pad) ---------------------------------
def slid_head(features, head, window):
    """The original FC head (a function: Flatten, Linear...) on every window of a feature map."""
    h, w = window
    rows, cols = features.shape[2] - h + 1, features.shape[3] - w + 1
    return np.stack([np.stack([head(features[:, :, i:i + h, j:j + w])[0]
                               for j in range(cols)], axis=-1) for i in range(rows)], axis=-2)


def test_cifar_example_dense_map(rng):
    net = cifar_example()   # CONV 3x3 pad 1 -> RELU -> POOL 2 -> FC: stride 2
    fc = vn.to_fully_conv(net, (3, 32, 32))
    assert (fc.stride, fc.exact) == ((2, 2), False)
    image = rng.standard_normal((3, 41, 38)).astype(np.float32)
    scores = vn.dense_scores(fc, image)
    assert scores.shape == (10, 5, 4)
    # each position is the original FC layer on its 16x16x12 window of the pooled volume
    features = net[:3].forward(image[None, :, :40, :38])
    head = lambda v: net[4].forward(net[3].forward(v))   # Flatten, Linear
    assert close(scores, slid_head(features, head, (16, 16)))
    # padding: a lone crop sees zeros where the dense pass sees the neighbouring pixels ...
    crops = crops_one_by_one(net, image, (2, 2), (32, 32))
    assert not close(scores, crops)
    # ... so exact=True scores crop by crop, equal to the definition
    assert close(vn.dense_scores(fc, image, exact=True), crops)
    assert close(vn.dense_scores(fc, image, stride=1, exact=True),
                 crops_one_by_one(net, image, (1, 1), (32, 32)))


def test_vgg16_volumes_follow_the_lecture():
    fc = vn.to_fully_conv(vgg16(), (3, 224, 224))
    assert fc.classifier[0].params["weight"].shape == (4096, 512, 7, 7)   # 7x7x512 -> 1x1x4096
    assert fc.classifier[3].params["weight"].shape == (4096, 4096, 1, 1)
    assert fc.classifier[6].params["weight"].shape == (1000, 4096, 1, 1)
    assert "avgpool" not in dict(fc.named_children())   # AdaptiveAvgPool2d(7) is the identity at 224
    assert fc.stride == (32, 32)
    assert fc.output_shape((3, 224, 224)) == (1000, 1, 1)
    assert fc.output_shape((3, 384, 384)) == (1000, 6, 6)   # (384 - 224) / 32 + 1 = 6


def test_alexnet_fc6_becomes_a_6x6x256_conv():
    from volnet.models.registry import build

    fc = vn.to_fully_conv(build("alexnet"), (3, 227, 227))   # the lecture's layout (Caffe's keys)
    assert fc.classifier.fc6.params["weight"].shape == (4096, 256, 6, 6)
    assert fc.classifier.fc8.params["weight"].shape == (1000, 4096, 1, 1)
    assert fc.stride == (32, 32)
    assert fc.output_shape((3, 227 + 5 * 32, 227 + 5 * 32)) == (1000, 6, 6)


def test_vgg16_structure_real_forward_at_384(rng):
    net = small_vgg16()
    fc = vn.to_fully_conv(net, (3, 224, 224))
    image = rng.standard_normal((3, 384, 384)).astype(np.float32)
    scores = vn.dense_scores(fc, image)
    assert scores.shape == (1000, 6, 6)
    features = fc.features.forward(image[None])        # (1, 32, 12, 12)
    head = lambda v: net.classifier.forward(net.flatten.forward(net.avgpool.forward(v)))
    assert close(scores, slid_head(features, head, (7, 7)))
    exact = vn.dense_scores(fc, image, exact=True)
    for i, j in [(0, 0), (2, 5), (5, 3)]:
        crop = image[None, :, 32 * i:32 * i + 224, 32 * j:32 * j + 224]
        assert close(exact[:, i, j], net.forward(crop)[0])


def test_adaptive_pool_that_tiles_evenly_becomes_an_average_pool(rng):
    net = small_vgg16()
    fc = vn.to_fully_conv(net, (3, 448, 448))         # features give 14x14 -> (7, 7): 2x2 windows
    pool = fc.avgpool
    assert (pool.kernel_size, pool.stride, fc.stride) == ((2, 2), (2, 2), (64, 64))
    x = rng.standard_normal((1, 3, 448, 448)).astype(np.float32)
    assert close(fc.forward(x)[:, :, 0, 0], net.forward(x))


# ---- refusals -------------------------------------------------------------------------
class Shift(Layer):
    """A layer to_fully_conv knows nothing about."""

    def output_shape(self, input_shape):
        return input_shape

    def _forward(self, x, training, keep_cache):
        return x + 1


class Pair(vn.layers.Container):
    """A container with its own forward rule."""

    def output_shape(self, input_shape):
        return input_shape


@pytest.mark.parametrize("make, shape, words", [
    (lambda: vn.Sequential(vn.Conv2d(3, 2, 3), vn.Linear(18, 4)), (3, 5, 5), ["Linear", "at 1", "Flatten"]),
    (lambda: vn.Sequential(vn.Conv2d(3, 2, 3), vn.Flatten(), vn.BatchNorm1d(18), vn.Linear(18, 4)),
     (3, 5, 5), ["BatchNorm1d", "at 2", "BatchNorm2d"]),
    (lambda: vn.Sequential(vn.Conv2d(3, 2, 3), vn.Flatten(), vn.Softmax(), vn.Linear(18, 4)),
     (3, 5, 5), ["Softmax", "at 2"]),
    (lambda: vn.Sequential(vn.Conv2d(3, 2, 3), vn.Flatten(), vn.Residual(vn.Linear(18, 18)), vn.Linear(18, 4)),
     (3, 5, 5), ["Residual", "at 2", "shortcut"]),
    (lambda: vn.Sequential(vn.Conv2d(3, 2, 3), Shift(), vn.Flatten(), vn.Linear(18, 4)),
     (3, 5, 5), ["Shift", "at 1"]),
    (lambda: vn.Sequential({"block": Pair(__import__("collections").OrderedDict(a=vn.ReLU()))}),
     (3, 5, 5), ["Pair", "at block", "Sequential, Residual and Concat"]),
    (lambda: vn.Sequential(vn.Conv2d(3, 2, 3, rng=0)), (3, 5, 5), ["(2, 3, 3)", "class scores"]),
    (lambda: small_vgg16(), (3, 320, 320), ["AdaptiveAvgPool2d", "at avgpool", "10x10"]),
])
def test_refuses_what_has_no_sliding_equivalent_naming_the_layer(make, shape, words):
    with pytest.raises(vn.ConfigError) as err:
        vn.to_fully_conv(make(), shape)
    for word in words:
        assert word in str(err.value)


@pytest.mark.parametrize("shape", [(28, 28), (3, 0, 28), "3x28x28", None])
def test_refuses_a_bad_input_shape(shape):
    with pytest.raises(vn.ConfigError, match="input_shape"):
        vn.to_fully_conv(vgg_like(), shape)


@pytest.mark.parametrize("kwargs, error, words", [
    ({"image": np.zeros((3, 27, 40), np.float32)}, vn.ShapeError, "at least 28x28"),
    ({"image": np.zeros((1, 30, 30), np.float32)}, vn.ShapeError, "3 channels"),
    ({"image": np.zeros((30, 30), np.float32)}, vn.ShapeError, "(C, H, W) or (N, C, H, W)"),
    ({"image": np.zeros((3, 30, 30), np.uint8)}, vn.DTypeError, "astype"),
    ({"image": np.zeros((3, 30, 30), np.float32), "stride": 0}, vn.ConfigError, "positive int"),
    ({"image": np.zeros((3, 30, 30), np.float32), "stride": 1.5}, vn.ConfigError, "positive int"),
    ({"image": np.zeros((3, 30, 30), np.float32), "input_shape": (3, 20, 20)}, vn.ConfigError, "differs"),
])
def test_dense_scores_rejects_bad_arguments(kwargs, error, words):
    fc = vn.to_fully_conv(vgg_like(), (3, 28, 28))
    with pytest.raises(error) as err:
        vn.dense_scores(fc, **kwargs)
    assert words in str(err.value)


def test_input_size_is_inferred_from_shapes_or_must_be_given():
    assert infer_input_shape(lenet5()) == (1, 28, 28)
    assert infer_input_shape(cifar_example()) == (3, 32, 32)
    with pytest.raises(vn.ConfigError, match="input_shape"):
        vn.dense_scores(residual_gap(), np.zeros((3, 20, 20), np.float32))
