"""`volnet import --mean/--std` with a wrong count or a non-finite value names the option's
problem (it said "a std of 1 values for 1-channel images; the file is inconsistent" for
--std nan, blaming the ONNX file for the user's option)."""

import pytest

from volnet.commands.preprocessing import from_record
from volnet.errors import VolnetError


@pytest.mark.parametrize("prep, words", [
    ({"scale": "x / 255", "std": [float("nan")]}, "finite"),
    ({"scale": "x / 255", "mean": [float("inf")]}, "finite"),
    ({"scale": "x / 255", "mean": [0.5, 0.5, 0.5]}, "one per channel (1)"),
])
def test_option_values_are_named_as_the_users(prep, words):
    with pytest.raises(VolnetError) as err:
        from_record(prep, 1, "--mean/--std")
    assert words in str(err.value) and "the file is inconsistent" not in str(err.value)


def test_a_checkpoints_record_is_still_called_inconsistent():
    with pytest.raises(VolnetError) as err:
        from_record({"scale": "x / 255", "mean": [0.1, 0.2]}, 3, "ck.safetensors")
    assert "the file is inconsistent" in str(err.value)
