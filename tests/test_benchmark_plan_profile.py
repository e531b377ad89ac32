"""benchmarks/plan_profile.py: the per-step profile of an inference plan, on a small net whose
Concat runs its branches side by side (inference_plan._Branches). Every step gets a row (the
group one for its wall time, then each branch's steps), the convolutions their kernel and
GFLOP, and profiling leaves the plan as it was (the same steps, the same output)."""

import numpy as np

import volnet as vn
from benchmarks import plan_profile
from volnet.layers import inference_plan
from volnet.runtime import backend, thread_policy


def _net():
    rng = np.random.default_rng(0)
    return vn.Sequential(
        vn.Conv2d(3, 16, 3, padding=1, rng=rng), vn.ReLU(),
        vn.Concat(vn.Sequential(vn.Conv2d(16, 24, 1, rng=rng), vn.ReLU()),
                  vn.Sequential(vn.Conv2d(16, 8, 1, rng=rng), vn.ReLU(),
                                vn.Conv2d(8, 32, 3, padding=1, rng=rng)),
                  vn.Sequential(vn.MaxPool2d(3, 1, padding=1), vn.Conv2d(16, 4, 1, rng=rng))))


def test_profile_rows_cover_a_concats_branches_and_leave_the_plan_unchanged():
    net = _net()
    x = np.random.default_rng(1).standard_normal((1, 3, 20, 20)).astype(np.float32)
    with backend.use_kernels("numba"), thread_policy.use_threads(2):
        want = net.forward(x)
        wall, cpu, rows = plan_profile.profile(net, x, repeats=2)
        plan = next(iter(inference_plan.plans_of(net).values()))
        steps = list(plan.steps)
        assert np.array_equal(net.forward(x), want)
    assert wall > 0 and cpu > 0
    names = [text for _, text, *_ in rows]
    group = [i for i, text in enumerate(names) if text.startswith("Concat branches")]
    assert len(group) == 1 and names[group[0]] == "Concat branches (3, 5 steps)"
    inside = [row for row in rows if not row[7]]     # a ReLU fuses into the conv before it
    assert len(inside) == 5 and all(row[1].startswith("  (branch) ") for row in inside)
    convs = [row for row in rows if row[6] is not None]
    assert len(convs) == 5                       # the stem and the four in the branches
    # a 1x1 16 -> 24 conv on 20x20: 2 * 24 * 16 * 400 multiply-adds
    assert any(row[6] == [24, 16, 1, 1] and abs(row[3] - 2 * 24 * 16 * 400 / 1e9) < 1e-12
               for row in convs)
    # the profile's wrappers are gone: the plan runs its own steps and branches again
    assert all(getattr(fn, "__name__", "") != "step" for fn, *_ in steps)
    branches = next(fn for fn, _, out, _ in steps if out is None).branches
    assert all(getattr(fn, "__name__", "") != "step" for branch in branches for fn, *_ in branch)
