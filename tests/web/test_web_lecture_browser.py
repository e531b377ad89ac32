"""The lecture pages in headless Chromium: set the controls, read the numbers, compare with volnet.

Each page's numbers are recomputed here from volnet directly (Conv2d.forward and backward,
vn.receptive_field, vn.dense_scores, vn.summary of vn.models.pattern). Screenshots go to
artifacts/web/lecture-*.png (git-ignored); docs/lecture/ holds copies that were looked at.
"""


import browsing
import numpy as np
import pytest
from browsing import shoot

import volnet as vn
from volnet.models.pattern import pattern
from volnet.models.registry import build
from volnet.web.lecture.dense import digit_strip


@pytest.fixture
def page(browser, server):
    context = browser.new_context(viewport={"width": 1300, "height": 900})
    page = context.new_page()
    problems = []
    page.on("pageerror", lambda err: problems.append(f"page error: {err}"))
    page.on("console", lambda msg: msg.type == "error" and problems.append(msg.text))
    page.base = server.url.rstrip("/")
    yield page
    context.close()
    assert not problems, problems


def by(page, testid):
    return page.locator(f'[data-testid="{testid}"]')


def text(page, testid) -> str:
    return by(page, testid).inner_text().strip()


def set_controls(page, **values):
    for name, value in values.items():
        by(page, name).fill(str(value))


def poll(check, what, timeout=30.0):
    return browsing.poll(check, timeout, what, ignore=(ValueError, IndexError), interval=0.05)


def grid(page, testid) -> np.ndarray:
    table = by(page, testid)
    cells = [float(v) for v in table.locator("td").all_inner_texts()]
    return np.array(cells).reshape(table.locator("tr").count(), -1)


def test_conv_page_cell_size_and_parameters(page, server):
    page.goto(page.base + "/lecture/conv")
    W, D, F, S, P, K = 5, 2, 3, 2, 1, 3
    set_controls(page, W=W, D=D, F=F, S=S, P=P, K=K)
    out = (W - F + 2 * P) // S + 1
    poll(lambda: text(page, "params-formula") == f"K * (F*F*D + 1) = {K} * ({F}*{F}*{D} + 1)",
         "the new setting")
    assert text(page, "formula") == f"(W - F + 2P)/S + 1 = ({W} - {F} + 2*{P})/{S} + 1 = {out}"
    assert text(page, "out-size") == str(out) == "3"
    assert text(page, "params") == f"{K * (F * F * D + 1):,}"
    assert text(page, "params-no-sharing") == f"{out * out * K * (F * F * D + 1):,}"
    for _ in range(10):
        by(page, "next").click()
    k, rest = divmod(10, out * out)
    poll(lambda: text(page, "cell-index") == f"{k}, {rest // out}, {rest % out}", "cell 10")
    # volnet's Conv2d on the numbers the page shows (the padded input and the filters)
    x = np.stack([grid(page, f"input-{d}") for d in range(D)])[:, P:-P, P:-P]
    layer = vn.Conv2d(D, K, F, stride=S, padding=P, dtype=np.float64)
    layer.params["weight"][...] = [[grid(page, f"weight-{f}-{d}") for d in range(D)] for f in range(K)]
    layer.params["bias"][...] = [float(by(page, f"bias-{f}").inner_text()) for f in range(K)]
    expected = layer.forward(x[None])[0]
    assert float(text(page, "cell-sum")) == pytest.approx(expected[k, rest // out, rest % out])
    shoot(page, "lecture-conv.png")
    set_controls(page, W=7, F=3, S=3, P=0)
    poll(lambda: text(page, "out-size") == "not an integer", "the invalid setting")
    assert "4/3 is not an integer" in text(page, "why") and by(page, "cell-sum").is_hidden()


def test_backprop_page_equals_conv2d_backward(page):
    page.goto(page.base + "/lecture/backprop")
    set_controls(page, W=6, F=3, K=2, seed=4)
    poll(lambda: grid(page, "dx-backward").shape == (6, 6) and by(page, "weight-1").count(),
         "a 6x6 dx and two filters")
    for _ in range(8):
        by(page, "next").click()
    poll(lambda: text(page, "dx-index") == "1, 2", "input position 8")
    layer = vn.Conv2d(1, 2, 3, dtype=np.float64)
    layer.params["weight"][...] = np.stack([grid(page, f"weight-{k}") for k in range(2)])[:, None]
    x, dout = grid(page, "x"), np.stack([grid(page, f"dout-{k}")[2:-2, 2:-2] for k in range(2)])
    layer.forward(x[None, None], training=True)
    dx = layer.backward(dout[None])[0, 0]
    np.testing.assert_allclose(grid(page, "dx-backward"), dx)
    np.testing.assert_allclose(grid(page, "dx-full"), dx)   # the full convolution, same numbers
    assert float(text(page, "dx-sum")) == float(text(page, "dx-backward-cell")) == dx[1, 2]
    pool = vn.MaxPool2d(2, stride=2)
    pool.forward(grid(page, "pool-x")[None, None], training=True)
    np.testing.assert_allclose(grid(page, "pool-dx"),
                               pool.backward(grid(page, "pool-dout")[None, None])[0, 0])
    shoot(page, "lecture-backprop.png")


def test_receptive_field_page_equals_receptive_field(page):
    page.goto(page.base + "/lecture/receptive-field")
    poll(lambda: text(page, "rf-size") != "", "the first field")
    by(page, "model").select_option("context_module")
    poll(lambda: by(page, "layer").locator("option[value=ctx_final]").count() == 1, "its layers")
    by(page, "layer").select_option("ctx_conv5_1")
    set_controls(page, row=20, col=40)
    poll(lambda: text(page, "rf-box-cols") == "8 to 72", "unit (20, 40)")
    net = build("context_module", seed=0, init="he")
    field = vn.receptive_field(net, (21, 66, 66), layer="ctx_conv5_1")
    assert text(page, "rf-size") == f"{field.size[0]}x{field.size[1]}" == "65x65"
    assert text(page, "rf-box-rows") == f"{20 - 32} to {20 + 32}"
    top, bottom = (int(v) for v in text(page, "erf-rows").split(" to "))
    assert top == 0 and bottom == 52   # the gradient reaches as far as the field, clipped at 0
    shoot(page, "lecture-receptive-field-dilated.png")
    by(page, "model").select_option("lenet5")
    poll(lambda: by(page, "layer").locator("option[value='5']").count() == 1, "LeNet's layers")
    by(page, "layer").select_option("3")
    by(page, "units").click(position={"x": 5, "y": 5})   # the top-left unit
    poll(lambda: text(page, "rf-box-rows") == "-2 to 11", "unit (0, 0) of layer 3")
    lenet = vn.receptive_field(build("lenet5", seed=0), (1, 28, 28), layer="3")
    assert text(page, "rf-size") == f"{lenet.size[0]}x{lenet.size[1]}"
    assert text(page, "rf-jump") == f"{lenet.jump[0]}x{lenet.jump[1]}"
    shoot(page, "lecture-receptive-field.png")


def test_dense_page_equals_dense_scores(page, sample, tmp_path):
    page.goto(page.base + "/lecture/dense")
    poll(lambda: text(page, "passes") != "", "the first map")
    by(page, "classifier").select_option("lenet5")
    by(page, "stride").select_option("2")
    poll(lambda: text(page, "step") == "2", "step 2")
    assert text(page, "passes") == "4" and text(page, "net-stride") == "4"   # shifts 0, 2 per axis
    image, _ = digit_strip(sample.x_test, sample.y_test)
    x = ((image - sample.mean[0]) / sample.std[0]).astype(np.float32)[None]
    scores = vn.dense_scores(build("lenet5", seed=0), x, 2, (1, 28, 28))
    assert text(page, "map-size") == f"{scores.shape[1]}x{scores.shape[2]}"
    set_controls(page, **{"map-row": 3, "map-col": 11})

    def shown():
        return np.array([float(v) for v in by(page, "scores-at").locator("li").all_inner_texts()])
    poll(lambda: len(shown()) == 10 and np.allclose(shown(), scores[:, 3, 11], atol=2e-3),
         f"the scores at (3, 11): {scores[:, 3, 11]}")
    # an uploaded checkpoint (other weights) becomes the classifier
    net = build("lenet5", seed=7)
    vn.save(tmp_path / "lenet.safetensors", net, preprocessing={
        "input_shape": [1, 28, 28], "mean": [float(sample.mean[0])], "std": [float(sample.std[0])]})
    by(page, "checkpoint").set_input_files(str(tmp_path / "lenet.safetensors"))
    scores = vn.dense_scores(net, x, 2, (1, 28, 28))
    poll(lambda: by(page, "classifier").input_value() == "checkpoint"
         and np.allclose(shown(), scores[:, 3, 11], atol=2e-3), "the checkpoint's scores")
    shoot(page, "lecture-dense.png")


def test_patterns_reply_never_types_into_the_field_the_user_is_in(page):
    # The page's first reply fills in the server's settings. One that lands after the user
    # focused and selected N but before the keystroke used to put "2" under the caret: typing
    # "1" then read "21" and the server refused it (400). Hold that reply to land it there.
    held = []
    page.route("**/api/lecture/patterns*", lambda route: held.append(route))
    page.goto(page.base + "/lecture/patterns")
    for _ in range(600):        # route handlers run only inside Playwright calls: wait in one
        if held:
            break
        page.wait_for_timeout(50)
    assert len(held) == 1, "the page never asked for its first settings"
    by(page, "N").focus()
    by(page, "N").select_text()
    held.pop().continue_()
    page.unroute("**/api/lecture/patterns*")
    poll(lambda: by(page, "M").input_value() == "2", "the first reply's settings")
    page.keyboard.insert_text("1")
    assert by(page, "N").input_value() == "1"
    net = pattern(1, 2, 1, input_shape=(3, 32, 32))
    total = vn.summary(net, (3, 32, 32)).totals["params"]
    poll(lambda: text(page, "total-params") == f"{total:,}", "N = 1's total")


def test_patterns_page_equals_summary(page):
    page.goto(page.base + "/lecture/patterns")
    set_controls(page, N=1, M=3, K=2, input=36)
    # issue 23: filters left alone follow vn.models.pattern's widths (32, 64), doubling on
    poll(lambda: by(page, "widths").input_value() == "32, 64, 128", "widths for M = 3")
    net = pattern(1, 3, 2, input_shape=(3, 36, 36), widths=(32, 64, 128))
    total = vn.summary(net, (3, 36, 36)).totals["params"]
    poll(lambda: text(page, "total-params") == f"{total:,}", "the 36x36 pattern's total")
    items = by(page, "lint").locator("li").all_inner_texts()
    assert any("not divisible by 2^M = 8" in item for item in items) and len(items) == 2
    shoot(page, "lecture-patterns.png")
    by(page, "input").fill("32")
    poll(lambda: by(page, "lint").locator("li").count() == 0, "no warnings at 32")
    three, seven = by(page, "compare").locator("tbody tr").all()
    assert three.locator("td").nth(1).inner_text() == f"{3 * (9 * 32 * 32 + 32):,}"
    assert seven.locator("td").nth(1).inner_text() == f"{49 * 32 * 32 + 32:,}"
