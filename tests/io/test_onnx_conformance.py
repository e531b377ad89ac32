"""The onnx package's node conformance cases through volnet's importer (see
onnx_conformance.py): no case gives a wrong answer, every refusal names what it refuses,
and the README's table is the one these runs produce."""

import re
from pathlib import Path

import pytest
from onnx_conformance import run_all, table

README = Path(__file__).resolve().parents[2] / "README.md"
pytestmark = pytest.mark.slow   # ~300 cases; collecting them runs the onnx reference ops


@pytest.fixture(scope="module")
def results():
    return run_all()   # a wrong result raises AssertionError here, naming the case


def test_every_listed_operator_has_cases_and_no_case_is_wrong(results):
    from volnet.io.onnx.importer import supported_ops

    assert set(results) == set(supported_ops())
    cnn = ["Conv", "MaxPool", "AveragePool", "BatchNormalization", "Gemm", "Relu", "Softmax",
           "Concat", "Add", "Sum", "Flatten", "Reshape", "Clip", "Pad", "PRelu", "Elu",
           "GlobalMaxPool", "LogSoftmax", "LRN", "Dropout"]
    for op in cnn:   # the operators of CNN inference pass most of their cases
        passed = sum(o != "refused" for o, _ in results[op])
        assert passed >= len(results[op]) / 3, (op, results[op])


def test_refusals_name_the_node_or_the_graph_property(results):
    for outcomes in results.values():
        for outcome, message in outcomes:
            if outcome == "refused":
                assert re.search(r"ONNX node '.*' \(\w+\), |graph input '|graph output '|"
                                 r"ONNX operator '\w+' \(node|exactly one input", message), message


def test_readme_table_is_the_measured_one(results):
    text = README.read_text()
    assert table(results) in text, "README conformance table is stale: run " \
        "python tests/io/onnx_conformance.py and paste its output"
