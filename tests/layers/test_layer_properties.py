"""Contract properties of every LAYER_CASES layer: shapes, batches, dtypes, memory layout.

* forward's shape is (N,) + output_shape(per-example shape), for N = 2 and N = 1;
* an empty batch (N = 0) gives (0, ...) outputs and zero parameter gradients, except
  batch norm in training mode, which refuses with a ShapeError (no statistics to take);
* float64 in gives float64 out and float64 grads; float32 likewise; float32 forward is
  close to float64's; a float64 input to a float32 layer is cast to the parameters' dtype
  (the policy documented in ``Layer.forward``);
* in inference mode, forward(X)[i] == forward(X[i:i+1]);
* transposed, strided and negative-stride inputs give the contiguous input's outputs and grads;
* inference keeps no backward cache.
"""

import numpy as np
import pytest
from layer_cases import CASE_IDS, LAYER_CASES, reseed_dropout

import volnet as vn


def _is_bn_train(case):
    return case.training and any(isinstance(lay, (vn.BatchNorm1d, vn.BatchNorm2d))
                                 for _, lay in case.build().named_layers())


@pytest.mark.parametrize("case", LAYER_CASES, ids=CASE_IDS)
@pytest.mark.parametrize("n", [1, 2])
def test_forward_shape_equals_output_shape(case, n):
    layer = case.layer()
    if n == 1 and isinstance(layer, vn.BatchNorm1d) and case.training and len(case.shape) == 1:
        with pytest.raises(vn.ShapeError, match="more than 1 value per channel"):
            layer.forward(case.x(n=1), training=True)
        return
    out = layer.forward(case.x(n=n), case.training, cache=True)
    assert out.shape == (n,) + layer.output_shape(case.shape)
    assert layer.backward(np.ones_like(out)).shape == (n,) + case.shape


@pytest.mark.parametrize("case", LAYER_CASES, ids=CASE_IDS)
def test_empty_batch(case):
    layer = case.layer()
    x = case.x(n=0)
    if _is_bn_train(case):
        with pytest.raises(vn.ShapeError, match="more than 1 value per channel"):
            layer.forward(x, training=True)
        return
    out = layer.forward(x, case.training, cache=True)
    assert out.shape == (0,) + layer.output_shape(case.shape)
    assert layer.backward(np.zeros(out.shape)).shape == x.shape
    for name, p, g in layer.named_params():
        assert g.shape == p.shape and not g.any(), name


@pytest.mark.parametrize("case", LAYER_CASES, ids=CASE_IDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_is_kept_end_to_end(case, dtype):
    layer = case.layer(dtype)
    out = layer.forward(case.x(dtype=dtype), case.training, cache=True)
    assert out.dtype == dtype
    assert layer.backward(np.ones_like(out)).dtype == dtype
    for name, p, g in layer.named_params():
        assert p.dtype == dtype and g.dtype == dtype, name
    for key, value in layer.state_dict().items():
        if not key.endswith("num_batches_tracked"):
            assert value.dtype == dtype, key


@pytest.mark.parametrize("case", LAYER_CASES, ids=CASE_IDS)
def test_float32_forward_close_to_float64(case):
    layer64 = case.layer(np.float64)
    layer32 = layer64.copy().astype(np.float32)
    x = case.x()
    reseed_dropout(layer64)
    reseed_dropout(layer32)
    out64 = layer64.forward(x, case.training)
    out32 = layer32.forward(x.astype(np.float32), case.training)
    np.testing.assert_allclose(out32, out64, rtol=1e-4, atol=1e-5 * max(1.0, np.abs(out64).max()))


@pytest.mark.parametrize("case", [c for c in LAYER_CASES if c.id in ("conv", "linear", "batchnorm2d_eval",
                                                                     "nested", "relu", "maxpool")],
                         ids=lambda c: c.id)
def test_float64_input_to_float32_layer_is_cast_to_parameter_dtype(case):
    """Documented in Layer.forward: a layer with parameters computes in its parameters' dtype."""
    layer = case.layer(np.float32)
    x = case.x()
    out = layer.forward(x, case.training, cache=True)
    has_params = any(True for _ in layer.named_params())
    assert out.dtype == (np.float32 if has_params else np.float64)
    reseed_dropout(layer)
    np.testing.assert_array_equal(out, layer.forward(x.astype(layer.dtype or x.dtype), case.training))


@pytest.mark.parametrize("case", LAYER_CASES, ids=CASE_IDS)
def test_batch_consistency_in_inference(case):
    layer = case.layer()
    x = case.x(n=3)
    whole = layer.forward(x)
    for i in range(3):
        np.testing.assert_allclose(layer.forward(x[i:i + 1])[0], whole[i], rtol=1e-12, atol=1e-13)


def _non_contiguous(x):
    """The same values as ``x`` in a transposed, strided, reversed view."""
    big = np.zeros(x.shape[::-1] + (2,), dtype=x.dtype)
    big[..., 1] = x.T
    view = big[..., 1].T                      # transposed back: Fortran-like strides, stride 2
    flipped = np.ascontiguousarray(view[::-1])[::-1]   # negative-stride view of the same values
    return view, flipped


@pytest.mark.parametrize("case", LAYER_CASES, ids=CASE_IDS)
def test_non_contiguous_input_equals_contiguous(case):
    x = case.x(n=3)
    layer = case.layer()
    reseed_dropout(layer)
    ref = layer.forward(x, case.training, cache=True)
    dout = np.random.default_rng(3).standard_normal(ref.shape)
    ref_dx = layer.backward(dout)
    ref_grads = {name: g.copy() for name, _, g in layer.named_params()}
    for view in _non_contiguous(x):
        assert not view.flags.c_contiguous
        np.testing.assert_array_equal(view, x)
        layer = case.layer()
        reseed_dropout(layer)
        np.testing.assert_allclose(layer.forward(view, case.training, cache=True), ref, rtol=1e-13, atol=1e-14)
        np.testing.assert_allclose(layer.backward(dout), ref_dx, rtol=1e-13, atol=1e-14)
        for name, _, g in layer.named_params():
            np.testing.assert_allclose(g, ref_grads[name], rtol=1e-12, atol=1e-13, err_msg=name)


@pytest.mark.parametrize("case", LAYER_CASES, ids=CASE_IDS)
def test_inference_keeps_no_cache(case):
    layer = case.layer()
    layer.forward(case.x())
    assert all(lay._cache is None for _, lay in layer.named_layers())
    with pytest.raises(vn.StateError, match="backward"):
        layer.backward(np.ones((2,) + layer.output_shape(case.shape)))
