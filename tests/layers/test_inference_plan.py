"""The inference plan (volnet/layers/inference_plan.py): the same outputs as the ordinary
path, bit for bit; a plan per input shape; outputs never overwritten; every parameter write
seen; hooks, training and structural changes turning it off or rebuilding it."""

import gc
import weakref

import numpy as np
import pytest
from batch_norm_stats import randomise_norm_stats

import volnet as vn
from volnet.functional.activation import add_relu, bias_add_
from volnet.functional.conv import conv2d_forward
from volnet.layers import Residual, Sequential, hooks, inference_plan
from volnet.models import googlenet, resnet
from volnet.runtime import backend


@pytest.fixture(params=["numba", "numpy"])
def kernels(request):
    """Both kernel paths (numpy: nothing fuses, so no plan is made)."""
    if request.param == "numba":
        pytest.importorskip("numba")
    with backend.use_kernels(request.param):
        yield request.param


@pytest.fixture
def fusing():
    """The compiled kernels, which plans need (tests of what a plan does)."""
    pytest.importorskip("numba")
    with backend.use_kernels("numba"):
        yield


def _unplanned(net, x, monkeypatch):
    with monkeypatch.context() as m:
        m.setattr(inference_plan, "ENABLED", False)
        return net.forward(x)


def _small_resnet(depth=18, seed=1):
    net = resnet(depth, num_classes=7, widths=(8, 16, 16, 32), seed=seed)
    return randomise_norm_stats(net, np.random.default_rng(seed))


def _x(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("make", [lambda: _small_resnet(18), lambda: _small_resnet(50),
                                  lambda: googlenet(num_classes=5, seed=3)],
                         ids=["resnet18", "resnet50", "googlenet"])
def test_planned_outputs_equal_the_unplanned_path_bit_for_bit(make, kernels, monkeypatch):
    net = make()
    x = _x((2, 3, 40, 40))
    want = _unplanned(net, x, monkeypatch)
    before = inference_plan.stats()
    first, second, third = net.forward(x), net.forward(x), net.forward(x)
    after = inference_plan.stats()
    for out in (first, second, third):
        assert np.array_equal(out, want)
    if kernels == "numba":      # the first call makes the plan, the next two run it
        assert after["made"] == before["made"] + 1 and after["reused"] == before["reused"] + 2
    else:                       # VOLNET_KERNELS=numpy: nothing fuses, nothing is planned
        assert after == before


def test_residual_blocks_run_as_fused_conv_steps(fusing):
    net = _small_resnet(18)
    x = _x((1, 3, 32, 32))
    net.forward(x)
    steps = [type(fn).__name__ for fn, *_ in _plan_of(net, x).steps]
    # stem conv+bn+relu, maxpool, 8 blocks of 2 convs (+3 downsample convs), pool,
    # flatten, fc; no separate add or ReLU steps: every sum is in a conv's epilogue
    assert steps.count("_Conv") == 1 + 16 + 3
    assert "function" not in steps      # no _add / _add_relu steps


def _plan_of(net, x):
    plans = inference_plan.plans_of(net)
    return plans[(x.shape, x.dtype)]


def test_a_new_shape_makes_a_new_plan_and_both_stay_right(monkeypatch):
    pytest.importorskip("numba")
    net = _small_resnet(18)
    xs = [_x((1, 3, 32, 32)), _x((3, 3, 48, 40), seed=1)]
    wants = [_unplanned(net, x, monkeypatch) for x in xs]
    made = inference_plan.stats()["made"]
    for _ in range(3):
        for x, want in zip(xs, wants):
            assert np.array_equal(net.forward(x), want)
    assert inference_plan.stats()["made"] == made + 2
    assert len(inference_plan.plans_of(net)) == 2


def test_returned_outputs_are_never_overwritten_by_later_calls():
    net = _small_resnet(18)
    a, b = _x((2, 3, 32, 32), 0), _x((2, 3, 32, 32), 1)
    for _ in range(2):
        net.forward(a)
    out_a = net.forward(a)
    kept = out_a.copy()
    out_b = net.forward(b)
    net.forward(a)
    assert np.array_equal(out_a, kept) and not np.shares_memory(out_a, out_b)
    assert not np.array_equal(out_a, out_b)


def _sgd_step(net, x):
    opt = vn.SGD(net.parameters(), lr=0.05)
    scores = net.forward(x, training=True)
    _, d = vn.softmax_cross_entropy(scores, np.arange(len(x)) % scores.shape[1])
    net.backward(d, input_grad=False)
    opt.step()


def _edit_conv_weight(net, x):
    net["layer1"][0].body.conv2.params["weight"][0, 0, 1, 1] += 0.5


def _edit_bn_stat(net, x):
    net["layer4"][1].body.bn2.buffers["running_var"][3] *= 4.0


def _replace_bn_bias(net, x):
    bn = net["layer2"][0].body.bn1
    bn.params["bias"] = bn.params["bias"] + 0.25


def _load_other(net, x):
    net.load_state_dict(_small_resnet(18, seed=9).state_dict())


@pytest.mark.parametrize("write", [_sgd_step, _edit_conv_weight, _edit_bn_stat, _replace_bn_bias,
                                   _load_other])
def test_every_parameter_write_is_seen_by_the_next_planned_call(write, monkeypatch):
    net = _small_resnet(18)
    x = _x((2, 3, 32, 32))
    for _ in range(2):
        old = net.forward(x)
    write(net, x)
    reused = inference_plan.stats()["reused"]
    got = net.forward(x)
    assert inference_plan.stats()["reused"] == reused + 1 or not backend.fusing()
    want = _unplanned(net, x, monkeypatch)
    assert np.array_equal(got, want) and not np.array_equal(got, old)


def test_astype_rebuilds_the_plan_in_the_new_dtype(monkeypatch):
    net = _small_resnet(18)
    x = _x((1, 3, 32, 32))
    net.forward(x)
    net.forward(x)
    net.astype(np.float64)
    x64 = x.astype(np.float64)
    got = [net.forward(x64) for _ in range(2)]
    want = _unplanned(net, x64, monkeypatch)
    assert got[0].dtype == got[1].dtype == np.float64
    assert np.array_equal(got[0], want) and np.array_equal(got[1], want)


def test_replacing_a_child_rebuilds_the_plan(monkeypatch):
    net = _small_resnet(18)
    x = _x((2, 3, 32, 32))
    net.forward(x)
    net.forward(x)
    net["fc"] = vn.Linear(32, 3, rng=4)
    got = [net.forward(x) for _ in range(2)]
    want = _unplanned(net, x, monkeypatch)
    assert got[0].shape == (2, 3) and np.array_equal(got[0], want) and np.array_equal(got[1], want)


def test_a_hook_turns_the_plan_off_and_sees_every_layer():
    pytest.importorskip("numba")
    net = _small_resnet(18)
    x = _x((1, 3, 32, 32))
    plain = [net.forward(x) for _ in range(2)][-1]
    leaves = sum(1 for _, layer in net.named_layers() if not layer.named_children())
    seen = []
    reused = inference_plan.stats()["reused"]
    with hooks.register_forward_hook(lambda layer, xi, out, training: seen.append(layer)):
        hooked = net.forward(x)
    assert inference_plan.stats()["reused"] == reused            # the plan stood aside
    assert sum(1 for layer in seen if not layer.named_children()) == leaves
    assert np.allclose(hooked, plain, rtol=1e-5, atol=1e-5)     # unfused: rounding differs
    conv = net["layer3"][1].body.conv1
    calls = []
    with conv.register_forward_hook(lambda *args: calls.append(args[0])):
        net.forward(x)
        net.forward(x)
    assert calls == [conv, conv] and inference_plan.stats()["reused"] == reused
    net.forward(x)                                                # hook removed: planned again
    assert inference_plan.stats()["reused"] == reused + 1


def test_training_and_cache_never_use_the_plan():
    net = _small_resnet(18)
    x = _x((2, 3, 32, 32))
    net.forward(x)
    net.forward(x)
    reused = inference_plan.stats()["reused"]
    net.forward(x, training=True)
    net.forward(x, cache=True)
    assert inference_plan.stats()["reused"] == reused
    assert net.backward(np.ones((2, 7), np.float32)).shape == x.shape   # the cache was kept


def test_backward_after_a_planned_call_refuses_a_stale_cache():
    net = _small_resnet(18)
    x = _x((2, 3, 32, 32))
    net.forward(x, training=True)                 # children keep training caches
    net.forward(x)
    net.forward(x)                                # planned
    with pytest.raises(vn.StateError, match="forward"):
        net.backward(np.ones((2, 7), np.float32))
    with pytest.raises(vn.StateError, match="forward"):
        net["fc"].backward(np.ones((2, 7), np.float32))


def test_bad_input_after_planning_gets_the_ordinary_errors():
    net = _small_resnet(18)
    x = _x((1, 3, 32, 32))
    net.forward(x)
    net.forward(x)
    bad = x.copy()
    bad[0, 1, 2, 3] = np.nan
    with pytest.raises(vn.NonFiniteError, match="NaN"):
        net.forward(bad)
    with pytest.raises(vn.ShapeError, match="expected 3 channels"):
        net.forward(_x((1, 4, 32, 32)))


def test_a_copy_gets_its_own_plans(monkeypatch):
    net = _small_resnet(18)
    x = _x((1, 3, 32, 32))
    net.forward(x)
    net.forward(x)
    dup = net.copy()
    dup["layer1"][0].body.conv1.params["weight"][...] *= 2
    assert np.array_equal(dup.forward(x), _unplanned(dup, x, monkeypatch))
    assert np.array_equal(dup.forward(x), _unplanned(dup, x, monkeypatch))
    assert not np.array_equal(dup.forward(x), net.forward(x))


@pytest.mark.parametrize("shape", [(1, 8, 9, 9), (2, 16, 20, 20)])
@pytest.mark.parametrize("relu", [False, True])
def test_conv_epilogue_with_residual_equals_the_separate_passes(shape, relu, kernels):
    # (2, 16, 20, 20) takes Winograd F(4x4) (its output transform, then the residual pass)
    rng = np.random.default_rng(shape[0])
    x = rng.standard_normal(shape).astype(np.float32)
    w = rng.standard_normal((16, shape[1], 3, 3)).astype(np.float32) * 0.2
    b, scale = (rng.standard_normal(16).astype(np.float32) for _ in range(2))
    short = rng.standard_normal((shape[0], 16, *shape[2:])).astype(np.float32)
    fused = conv2d_forward(x, w, b, (1, 1), (1, 1), keep_cache=False, scale=scale,
                           residual=short, relu=relu)[0]
    plain = conv2d_forward(x, w, b, (1, 1), (1, 1), keep_cache=False, scale=scale)[0]
    want = add_relu(plain, short, keep_cache=False)[0] if relu else plain + short
    assert np.array_equal(fused, want)
    # against float64 arithmetic: the epilogue is scale, bias, sum, ReLU in that order
    ref = bias_add_(conv2d_forward(x.astype(np.float64), w.astype(np.float64), None, (1, 1),
                                   (1, 1), keep_cache=False)[0], b.astype(np.float64), relu,
                    scale.astype(np.float64), short.astype(np.float64))
    np.testing.assert_allclose(fused, ref, rtol=1e-4, atol=1e-4)


def test_residual_operand_is_refused_in_training():
    x = _x((1, 2, 5, 5))
    with pytest.raises(vn.ConfigError, match="inference only"):
        conv2d_forward(x, _x((2, 2, 3, 3)), None, (1, 1), (1, 1), keep_cache=True,
                       residual=x)


def test_a_residual_block_whose_body_ends_without_a_conv_still_sums(monkeypatch):
    pytest.importorskip("numba")
    block = Sequential(vn.Conv2d(3, 4, 3, padding=1, rng=0),
                       Residual(Sequential(vn.Conv2d(4, 4, 3, padding=1, rng=1), vn.ReLU()),
                                None, vn.ReLU()),
                       Residual(Sequential(vn.Conv2d(4, 4, 1, rng=2)), None, None))
    x = _x((2, 3, 60, 60))
    want = _unplanned(block, x, monkeypatch)
    for _ in range(3):
        assert np.array_equal(block.forward(x), want)


def test_a_dropped_network_takes_its_plans_with_it():
    net = _small_resnet(18)
    x = _x((1, 3, 32, 32))
    net.forward(x)
    net.forward(x)
    assert inference_plan.plans_of(net)
    ref = weakref.ref(net)
    del net
    gc.collect()
    assert ref() is None


def _graph():
    """conv -> bn -> relu (a), then conv2 -> bn2 (b) and a projection conv3 of the input
    computed after it (c), relu(b + c); a conv read twice (d: by a ReLU and by the output
    sum) and a batch norm + ReLU of its own."""
    from volnet.layers.graph import Graph, Node

    layers = {"conv": vn.Conv2d(3, 8, 3, padding=1, rng=0), "bn": vn.BatchNorm2d(8),
              "relu": vn.ReLU(), "conv2": vn.Conv2d(8, 8, 3, padding=1, rng=1),
              "bn2": vn.BatchNorm2d(8), "conv3": vn.Conv2d(3, 8, 1, rng=2),
              "bn3": vn.BatchNorm2d(8), "relu2": vn.ReLU(),
              "conv4": vn.Conv2d(8, 8, 1, rng=3), "relu3": vn.ReLU(),
              "bn4": vn.BatchNorm2d(8), "relu4": vn.ReLU()}
    rng = np.random.default_rng(0)
    for layer in layers.values():
        if "running_var" in layer.buffers:
            layer.buffers["running_var"][...] = rng.uniform(0.5, 2, 8)
            layer.buffers["running_mean"][...] = rng.normal(0, 0.2, 8)
    nodes = [Node("layer", "conv", ("x",), "c1"), Node("layer", "bn", ("c1",), "b1"),
             Node("layer", "relu", ("b1",), "a"), Node("layer", "conv2", ("a",), "c2"),
             Node("layer", "bn2", ("c2",), "b"), Node("layer", "conv3", ("x",), "c3"),
             Node("layer", "bn3", ("c3",), "c"), Node("add", "sum", ("b", "c"), "s"),
             Node("layer", "relu2", ("s",), "r"), Node("layer", "conv4", ("r",), "d"),
             Node("layer", "relu3", ("d",), "e"), Node("add", "out", ("d", "e"), "f"),
             Node("layer", "bn4", ("f",), "g"), Node("layer", "relu4", ("g",), "y")]
    return Graph(layers, nodes, "x", "y")


@pytest.mark.parametrize("residual_fusion", [True, False])
def test_a_graph_is_lowered_with_the_containers_fusions(residual_fusion, monkeypatch):
    pytest.importorskip("numba")
    g = _graph()
    x = _x((2, 3, 70, 70))
    want = _unplanned(g, x, monkeypatch)
    plan = inference_plan.Plan(g, residual_fusion=residual_fusion)
    kinds = [type(fn).__name__ if not hasattr(fn, "__self__") else fn.__name__
             for fn, *_ in plan.steps]
    # conv+bn+relu; conv2+bn2 (+ the sum and relu2 with residual fusion); conv3+bn3; conv4
    # alone (two readers); relu3; the output sum; bn4+relu4
    assert kinds.count("_Conv") == 3 and "inference_relu" in kinds
    assert len(plan.steps) == (7 if residual_fusion else 8)
    # the ordinary Graph runs each batch norm on its own: the folded scale rounds differently,
    # inside the Winograd output transform where a layer takes Winograd at inference, whose
    # float32 error is normwise ~1e-5 (the other Winograd parity tests' tolerance)
    np.testing.assert_allclose(plan.run(x), want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
    for _ in range(3):
        np.testing.assert_allclose(g.forward(x), want, rtol=1e-5,
                                   atol=1e-5 * np.abs(want).max())


def test_an_imported_onnx_resnet_is_planned_with_every_conv_fused(tmp_path, monkeypatch):
    pytest.importorskip("onnx")
    pytest.importorskip("numba")
    net = _small_resnet(18)
    vn.io.export_onnx(net, tmp_path / "r.onnx", (3, 40, 40))
    g = vn.io.load_onnx(tmp_path / "r.onnx")
    x = _x((2, 3, 40, 40))
    want = _unplanned(g, x, monkeypatch)
    got = [g.forward(x) for _ in range(3)]
    plan = inference_plan.plans_of(g)[(x.shape, x.dtype)]
    assert sum(type(fn).__name__ == "_Conv" for fn, *_ in plan.steps) == 20   # all fused
    assert np.array_equal(got[0], want) and np.array_equal(got[2], got[1])   # made, then run
    for ref in (want, net.forward(x)):      # the ordinary Graph; the zoo network's plan
        np.testing.assert_allclose(got[-1], ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())


def test_a_graph_root_is_not_kept_alive_by_its_plans():
    g = _graph()
    x = _x((2, 3, 70, 70))
    for _ in range(3):
        g.forward(x)
    ref = weakref.ref(g)
    del g
    gc.collect()
    assert ref() is None


def test_inputs_of_another_dtype_run_unplanned_and_stay_right(monkeypatch):
    net = _small_resnet(18)                     # float32 parameters
    x = _x((1, 3, 32, 32)).astype(np.float64)   # each layer casts: no plan
    made = inference_plan.stats()["made"]
    outs = [net.forward(x) for _ in range(3)]
    assert inference_plan.stats()["made"] == made
    want = _unplanned(net, x, monkeypatch)
    assert all(np.array_equal(out, want) and out.dtype == np.float32 for out in outs)
    net.astype(np.float64)                      # now they match: planned
    for _ in range(2):
        got = net.forward(x)
    assert inference_plan.stats()["made"] == made + 1
    assert np.array_equal(got, _unplanned(net, x, monkeypatch))


def test_a_planned_call_leaves_every_cache_cleared_as_the_ordinary_path(fusing, monkeypatch):
    """Layers with Layer's own clear_cache are cleared by the plan where they hold a cache;
    a subclass with its own clear_cache has it called, after every planned call."""

    class Pool(vn.layers.MaxPool2d):
        cleared = 0

        def clear_cache(self):
            type(self).cleared += 1
            super().clear_cache()

    net = Sequential(vn.layers.Conv2d(3, 8, 3, padding=1, rng=0), vn.layers.BatchNorm2d(8),
                     vn.layers.ReLU(), Pool(2), vn.layers.Conv2d(8, 4, 1, rng=1))
    x = _x((1, 3, 16, 16))
    net.forward(x)
    net.forward(x)                                   # planned from here
    assert _plan_of(net, x) is not None
    net.forward(x, training=True)                    # every layer keeps a training cache
    assert net[0]._cache is not None and net[3]._cache is not None
    before = Pool.cleared
    want = _unplanned(net.copy(), x, monkeypatch)   # the running statistics of now
    reused = inference_plan.stats()["reused"]
    out = net.forward(x)
    assert inference_plan.stats()["reused"] == reused + 1
    assert np.array_equal(out, want)
    assert all(layer._cache is None for layer in net) and Pool.cleared > before
    with pytest.raises(vn.StateError, match="forward"):
        net.backward(np.ones(out.shape, np.float32))


@pytest.mark.parametrize("make", [lambda: _small_resnet(18), lambda: _small_resnet(50),
                                  lambda: googlenet(num_classes=5, seed=3)],
                         ids=["resnet18", "resnet50", "googlenet"])
@pytest.mark.parametrize("threads", [1, 2])
def test_batch_one_planned_equals_unplanned_at_each_thread_count(make, threads, monkeypatch):
    """Batch 1 takes the split-by-filters paths at two threads (the worker count read once
    per call): still the ordinary path's answer bit for bit."""
    pytest.importorskip("numba")
    from volnet.runtime import thread_policy
    net = make()
    x = _x((1, 3, 64, 64))
    with backend.use_kernels("numba"), thread_policy.use_threads(threads):
        want = _unplanned(net, x, monkeypatch)
        net.forward(x)
        reused = inference_plan.stats()["reused"]
        got = net.forward(x)
        assert inference_plan.stats()["reused"] == reused + 1
    assert np.array_equal(got, want)


def test_a_nested_change_after_many_planned_calls_rebuilds_the_plan(monkeypatch):
    """A plan that ran (and found its layers unchanged) several times still sees a child
    replaced deep inside a block, or an astype of one layer, on the next call."""
    pytest.importorskip("numba")
    net = _small_resnet(18)
    x = _x((1, 3, 32, 32))
    for _ in range(3):
        net.forward(x)
    block = net["layer3"][1].body
    block["conv1"] = vn.layers.Conv2d(16, 16, 3, padding=1, bias=False, rng=9)
    got = net.forward(x)
    assert np.array_equal(got, _unplanned(net, x, monkeypatch))
    for _ in range(2):
        net.forward(x)
    made = inference_plan.stats()["made"]
    net["fc"].astype(np.float64)          # one layer's dtype: the network now runs unplanned
    got = net.forward(x)
    assert inference_plan.stats()["made"] == made    # a refusal, not a plan
    assert got.dtype == np.float64 and np.array_equal(got, _unplanned(net, x, monkeypatch))


def test_a_hook_on_another_network_leaves_this_plan_running():
    """Hooks are asked of each layer only while some layer has one: a hook elsewhere makes
    the plan look, and it finds none of its own layers watched."""
    pytest.importorskip("numba")
    net, other = _small_resnet(18), _small_resnet(18, seed=2)
    x = _x((1, 3, 32, 32))
    want = [net.forward(x) for _ in range(2)][-1]
    calls = []
    with other["fc"].register_forward_hook(lambda *args: calls.append(args[0])):
        reused = inference_plan.stats()["reused"]
        got = net.forward(x)
        assert inference_plan.stats()["reused"] == reused + 1 and calls == []
        conv = net["layer2"][0].body.conv1
        with conv.register_forward_hook(lambda *args: calls.append(args[0])):
            net.forward(x)
        assert calls == [conv] and inference_plan.stats()["reused"] == reused + 1
    assert np.array_equal(got, want)


def _inception(seed=0):
    """A stem and an inception-style Concat of four branches (one of them a Concat itself),
    then a second Concat: branches of unequal weight, a pool branch, one branch the last
    reader of the shared input in step order."""
    vn_rng = np.random.default_rng(seed)
    inner = vn.Concat(vn.Conv2d(8, 3, 1), vn.Conv2d(8, 5, 3, padding=1))
    net = Sequential(
        vn.Conv2d(3, 16, 3, padding=1), vn.ReLU(),
        vn.Concat(Sequential(vn.Conv2d(16, 24, 1), vn.ReLU()),
                  Sequential(vn.Conv2d(16, 8, 1), vn.ReLU(), vn.Conv2d(8, 32, 3, padding=1)),
                  Sequential(vn.Conv2d(16, 8, 1), inner),
                  Sequential(vn.MaxPool2d(3, 1, padding=1), vn.Conv2d(16, 4, 1))),
        vn.Concat(vn.Conv2d(68, 6, 1), vn.Conv2d(68, 7, 1)))
    for _, p, _ in net.named_params():
        p[...] = vn_rng.standard_normal(p.shape).astype(p.dtype) * 0.3
    return net


def test_concat_branches_share_their_input_until_all_ran(fusing):
    """The plan gathers each outermost Concat's branches into one step; the register they
    share (their input) is released by that step, after every branch ran, never by a step
    inside a branch (on two threads one branch would drop what the other still reads); a
    nested Concat stays inside its branch."""
    net = _inception()
    x = _x((1, 3, 9, 9))
    net.forward(x)
    (plan,) = inference_plan.plans_of(net).values()
    groups = [(fn, ins, frees) for fn, ins, out, frees in plan.steps if out is None]
    assert len(groups) == 2
    for fn, (slot,), frees in groups:
        assert slot in frees
        inner = [step for branch in fn.branches for step in branch]
        assert all(slot not in step[3] for step in inner)
        assert all(step[2] is not None for step in inner)   # the nested Concat: plain steps
    assert [len(fn.branches) for fn, _, _ in groups] == [4, 2]


@pytest.mark.parametrize("batch", [1, 2])
def test_concat_branches_run_side_by_side_at_batch_one(two_threads_plan, monkeypatch, batch):
    """At batch 1 (fewer samples than threads) the branches go to the block threads in
    one hand-off per Concat, each layer in them on one thread; at batch 2 they run in turn
    on the caller. Either way the ordinary path's answer, bit for bit."""
    net = _inception(seed=4)
    x = _x((batch, 3, 11, 11), seed=2)
    want = _unplanned(net, x, monkeypatch)
    net.forward(x)
    (plan,) = inference_plan.plans_of(net).values()
    groups = {id(fn): fn for fn, _, out, _ in plan.steps if out is None}
    calls, real = [], inference_plan.block_threads.run
    monkeypatch.setattr(inference_plan.block_threads, "run",
                        lambda fn, k, **kw: calls.append((fn.__qualname__, k)) or real(fn, k, **kw))
    got = net.forward(x)
    assert np.array_equal(got, want)
    by_groups = [k for name, k in calls if name.startswith("_Branches")]
    assert by_groups == ([2, 2] if batch == 1 else [])
    if batch == 1:          # the layers inside the branches ran whole, on their thread
        assert all(k == 1 for name, k in calls if not name.startswith("_Branches"))
    assert len(groups) == 2


@pytest.fixture
def two_threads_plan(two_threads):
    """The compiled kernels on two threads (the plan's branches need two)."""
    from volnet.runtime import thread_policy
    with backend.use_kernels("numba"), thread_policy.use_threads(two_threads):
        yield


@pytest.mark.parametrize("costs, count, want", [
    ([10, 1, 5, 4], 2, [[0], [1, 2, 3]]),       # 10 | 5 + 4 + 1
    ([3, 3, 3, 3], 2, [[0, 2], [1, 3]]),
    ([1, 2], 4, [[1], [0]]),                    # more threads than branches
    ([5], 2, [[0]]),
])
def test_branches_are_shared_largest_first_to_the_least_loaded_thread(costs, count, want):
    group = inference_plan._Branches([[] for _ in costs], costs, 0)
    assert group.shares(count) == want


def test_a_failing_branch_raises_and_the_next_call_runs(two_threads_plan, monkeypatch):
    """An error inside a branch on a block thread reaches the caller as itself, once the
    other branches finished; the plan and the threads serve the next call."""
    net = _inception(seed=5)
    x = _x((1, 3, 9, 9))
    want = net.forward(x)
    net.forward(x)
    conv = net[2][0][0]             # the first branch's convolution, fused with its ReLU

    def broken(*args, **kwargs):
        raise RuntimeError("branch failed")

    monkeypatch.setattr(conv, "fused_inference", broken, raising=False)
    with pytest.raises(RuntimeError, match="branch failed"):
        net.forward(x)
    monkeypatch.undo()
    assert np.array_equal(net.forward(x), want)


def test_a_branch_on_a_block_thread_is_not_an_outermost_call(two_threads_plan):
    """A layer run whole inside a branch (a Residual with a sigmoid) on a block thread is
    nested in the network's call, as on the caller's thread: no NaN scan of its input (an
    infinite filter makes NaN intermediates the ordinary path passes through)."""
    rng = np.random.default_rng(0)
    net = Sequential(
        vn.Conv2d(3, 16, 3, padding=1),
        vn.Concat(Sequential(vn.Conv2d(16, 64, 3, padding=1), vn.ReLU()),
                  vn.Residual(Sequential(vn.Conv2d(16, 4, 1)), vn.Conv2d(16, 4, 1),
                              activation=vn.Sigmoid())))
    for _, p, _ in net.named_params():
        p[...] = rng.standard_normal(p.shape).astype(p.dtype) * 0.3
    net[0].params["weight"][0] = np.inf
    x = _x((1, 3, 8, 8), seed=1)
    want = net.forward(x)
    assert np.isnan(want).any()
    for _ in range(2):      # the plan made, then run with the Residual on a block thread
        assert np.array_equal(net.forward(x), want, equal_nan=True)


def test_a_layer_in_two_branches_keeps_them_in_turn(two_threads_plan, monkeypatch):
    """One batch norm in two branches (rectified in one, not in the other): a fused ReLU
    sets its layer's state for the length of a call, so such branches never run side by
    side; the ordinary path's answer on every call."""
    bn = vn.BatchNorm2d(16)
    bn.buffers["running_mean"][...] = np.random.default_rng(0).normal(0, 1, 16)
    net = Sequential(vn.Conv2d(3, 16, 1), vn.Concat(Sequential(bn, vn.ReLU()), Sequential(bn)))
    x = _x((1, 3, 32, 32))
    want = _unplanned(net, x, monkeypatch)
    net.forward(x)
    (plan,) = inference_plan.plans_of(net).values()
    assert all(out is not None for _, _, out, _ in plan.steps)     # no group of branches
    for _ in range(5):
        assert np.array_equal(net.forward(x), want)


@pytest.mark.parametrize("side", ["identity", "pool"])
def test_a_lone_convolution_beside_a_light_branch_runs_in_turn(two_threads_plan, monkeypatch,
                                                               side):
    """Where one thread's share would hold more than BRANCH_BALANCE of the branches'
    weights (a convolution beside an identity or a pool), the branches run in turn and the
    convolution splits its own work: no hand-off of the group."""
    light = vn.Identity() if side == "identity" else vn.MaxPool2d(3, 1, padding=1)
    net = Sequential(vn.Conv2d(3, 32, 1), vn.Concat(light, vn.Conv2d(32, 32, 3, padding=1)))
    x = _x((1, 3, 24, 24))
    want = _unplanned(net, x, monkeypatch)
    net.forward(x)
    calls, real = [], inference_plan.block_threads.run
    monkeypatch.setattr(inference_plan.block_threads, "run",
                        lambda fn, k, **kw: calls.append(fn.__qualname__) or real(fn, k, **kw))
    assert np.array_equal(net.forward(x), want)
    assert not any(name.startswith("_Branches") for name in calls)


def test_prange_kernels_in_a_branch_run_their_serial_variant(two_threads_plan, monkeypatch):
    """A depthwise convolution (a prange kernel) inside a branch on a block thread runs its
    serial variant: two parallel regions started at once oversubscribe the cores, and
    numba's workqueue layer aborts the process on it."""
    from volnet.functional.compiled import depthwise
    net = Sequential(vn.Conv2d(3, 16, 1),
                     vn.Concat(vn.Conv2d(16, 16, 3, padding=1, groups=16),
                               vn.Conv2d(16, 16, 3, padding=1, groups=16)))
    x = _x((1, 3, 20, 20))
    want = _unplanned(net, x, monkeypatch)
    net.forward(x)
    (plan,) = inference_plan.plans_of(net).values()
    assert any(out is None for _, _, out, _ in plan.steps)
    real = depthwise.forward.parallel

    def parallel(*args):
        assert not inference_plan.block_threads.inside_blocks()
        return real(*args)

    monkeypatch.setattr(depthwise.forward, "parallel", parallel)
    assert np.array_equal(net.forward(x), want)
