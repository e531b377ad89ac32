"""Format-3 checksums: every edit that changes what a checkpoint computes is refused.

The cases are the second trust round's (issue 24): seven edits of the JSON header that
loaded silently under format 2 and moved predictions by up to 128, random single-bit
flips anywhere in the file, and a ``format_version`` downgrade that turned the tensor-table
check off. Each is first shown to matter (the edited network really computes something
else, so a loader that accepted it would be silently wrong), then refused.
"""

import hashlib
import json
import warnings

import numpy as np
import pytest

import volnet as vn
from volnet.cli import main
from volnet.errors import CheckpointError
from volnet.io import checkpoint as ck
from volnet.io import safetensors as st
from volnet.io.architecture import from_json


def small_net():
    return vn.Sequential(
        vn.Conv2d(1, 4, 3, padding=1, rng=0), vn.BatchNorm2d(4), vn.ReLU(),
        vn.MaxPool2d(2), vn.Flatten(), vn.Linear(4 * 4 * 4, 3, rng=1))


PREP = {"input_shape": [1, 8, 8], "mean": [0.5], "std": [0.25]}
X = np.random.default_rng(0).standard_normal((2, 1, 8, 8)).astype(np.float32)


@pytest.fixture
def saved(tmp_path):
    net = small_net()
    # non-trivial BN statistics, so an eps edit moves the output
    net[1].buffers["running_var"][:] = np.float32(0.01)
    path = tmp_path / "net.safetensors"
    ck.save(path, net, preprocessing=PREP)
    return path


def _header(path):
    blob = path.read_bytes()
    n = int.from_bytes(blob[:8], "little")
    return blob, n, json.loads(blob[8:8 + n])


def _write_header(path, blob, n, header):
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(len(text).to_bytes(8, "little") + text + blob[8 + n:])


def _edit_architecture(arch, edit):
    doc = json.loads(arch)
    layers = dict(doc["net"]["children"])
    edit(layers)
    return json.dumps(doc, separators=(",", ":"))


def _set(layers, index, **args):
    layers[str(index)]["args"].update(args)


def _retype(layers, index, kind, module):
    layers[str(index)].update(type=kind, module=module)
    if kind == "AvgPool2d":
        layers[str(index)]["args"] = {"kernel_size": 2}


ARCH_EDITS = {
    "stride 1->2": lambda l: _set(l, 0, stride=[2, 2]),
    "padding 1->2": lambda l: _set(l, 0, padding=[2, 2]),
    "ReLU->Sigmoid": lambda l: _retype(l, 2, "Sigmoid", "volnet.layers.activation"),
    "BN eps->0.5": lambda l: _set(l, 1, eps=0.5),
    "MaxPool->AvgPool": lambda l: _retype(l, 3, "AvgPool2d", "volnet.layers.pool"),
}


def _changes_the_output(path, arch):
    """The edited architecture really computes something else (so silence would be wrong)."""
    good = vn.load(path)
    tensors, _ = st.load_file(path)
    edited = from_json(arch)
    edited.load_state_dict({k[len("model."):]: v for k, v in tensors.items()}, strict=False)
    try:
        return not np.allclose(edited.forward(X), good.forward(X), atol=1e-4)
    except vn.errors.VolnetError:
        return True   # a shape change is a different computation too


@pytest.mark.parametrize("edit", sorted(ARCH_EDITS))
def test_architecture_edit_is_refused(saved, edit):
    blob, n, header = _header(saved)
    arch = _edit_architecture(header["__metadata__"]["architecture"], ARCH_EDITS[edit])
    assert _changes_the_output(saved, arch)
    header["__metadata__"]["architecture"] = arch
    _write_header(saved, blob, n, header)
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        vn.load(saved)


def test_recorded_mean_edit_is_refused(saved):
    blob, n, header = _header(saved)
    assert json.loads(header["__metadata__"]["preprocessing"])["mean"] == [0.5]
    header["__metadata__"]["preprocessing"] = json.dumps({**PREP, "mean": [0.9]})
    _write_header(saved, blob, n, header)
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        vn.load(saved)


def test_any_added_metadata_field_is_covered(saved):
    """Fields a later volnet records (class names, scale...) are covered with no code change."""
    blob, n, header = _header(saved)
    header["__metadata__"]["class_names"] = json.dumps(["a", "b", "c"])
    _write_header(saved, blob, n, header)
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        vn.load(saved)


def test_respelling_the_header_loads_identically(saved):
    """Key order and whitespace do not change what the file says: same checksum, same net."""
    before = vn.load(saved).forward(X)
    blob, n, header = _header(saved)
    reordered = dict(reversed(list(header.items())))
    text = json.dumps(reordered, indent=1).encode()
    text += b" " * (-len(text) % 8)
    saved.write_bytes(len(text).to_bytes(8, "little") + text + blob[8 + n:])
    np.testing.assert_array_equal(vn.load(saved).forward(X), before)


def _swap_offsets(header):
    """Swap the byte ranges of two same-size tensors (BN running mean and running var)."""
    a, b = "model.1.running_mean", "model.1.running_var"
    header[a]["data_offsets"], header[b]["data_offsets"] = (header[b]["data_offsets"],
                                                            header[a]["data_offsets"])


def _bytes_sha(blob, n):
    return hashlib.sha256(blob[8 + n:]).hexdigest()


@pytest.mark.parametrize("version", ["1", "2"])
def test_format_downgrade_with_swapped_offsets_is_refused(saved, version):
    blob, n, header = _header(saved)
    meta = header["__metadata__"]
    meta["format_version"] = version
    _swap_offsets(header)
    if version == "1":   # the editor recomputes the bytes-only checksum format 1 used
        del meta["sha256"]
        meta["tensor_sha256"] = _bytes_sha(blob, n)
    else:                # ... or format 2's table checksum
        meta["sha256"] = ck.table_sha256(header, blob[8 + n:])
    _write_header(saved, blob, n, header)
    tensors, _ = st.load_file(saved)   # the swap is real: the two buffers traded values
    assert not np.array_equal(tensors["model.1.running_mean"], np.zeros(4, np.float32))
    with pytest.raises(CheckpointError, match="out of order"):
        vn.load(saved)


def test_format_3_downgraded_without_recomputing_is_refused(saved):
    blob, n, header = _header(saved)
    header["__metadata__"]["format_version"] = "2"
    _write_header(saved, blob, n, header)
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        vn.load(saved)


def _as_old_format(path, version):
    blob, n, header = _header(path)
    meta = header["__metadata__"]
    meta["format_version"] = str(version)
    if version == 1:
        del meta["sha256"]
        meta["tensor_sha256"] = _bytes_sha(blob, n)
    else:
        meta["sha256"] = ck.table_sha256(header, blob[8 + n:])
    _write_header(path, blob, n, header)


@pytest.mark.parametrize("version", [1, 2])
def test_older_formats_load_with_one_warning_and_strict_refuses(saved, version):
    expected = vn.load(saved).forward(X)
    _as_old_format(saved, version)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = vn.load(saved).forward(X)
    np.testing.assert_array_equal(got, expected)
    unverified = [w for w in caught if issubclass(w.category, ck.UnverifiedCheckpointWarning)]
    assert len(unverified) == 1
    assert "architecture" in str(unverified[0].message)
    assert ("tensor table" in str(unverified[0].message)) == (version == 1)
    with pytest.raises(CheckpointError, match="strict"):
        vn.load(saved, strict=True)
    with ck.strict_files(), pytest.raises(CheckpointError, match="strict"):
        vn.load(saved)


def test_strict_files_flag_on_the_cli(saved, capsys):
    _as_old_format(saved, 2)
    assert main(["--strict-files", "summary", str(saved)]) == 2
    assert "strict" in capsys.readouterr().err
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["summary", str(saved)]) == 0


def test_resaving_upgrades_to_the_current_format(saved, tmp_path):
    _as_old_format(saved, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = vn.load(saved)
    out = ck.save(tmp_path / "new.safetensors", net)
    assert st.load_file(out)[1]["format_version"] == str(ck.FORMAT_VERSION)
    vn.load(out, strict=True)


def test_random_single_bit_flips_are_refused_or_identical(saved):
    expected = vn.load(saved).forward(X)
    blob = saved.read_bytes()
    rng = np.random.default_rng(24)
    refused = 0
    for bit in rng.choice(len(blob) * 8, size=400, replace=False):
        flipped = bytearray(blob)
        flipped[bit // 8] ^= 1 << (bit % 8)
        saved.write_bytes(bytes(flipped))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error")   # an older-format load would be a warning
                got = vn.load(saved).forward(X)
        except CheckpointError:
            refused += 1
            continue
        np.testing.assert_array_equal(got, expected)
    assert refused >= 390   # a flip in the JSON's padding spaces may leave it identical


def test_bit_flips_inside_the_architecture_are_refused(saved):
    """The issue's worst flip sat inside ``"padding":[1,1]``: every bit there is refused."""
    blob = saved.read_bytes()
    field = b'padding\\":[1,1]'   # the architecture is a JSON string inside the JSON header
    at = blob.index(field)
    for byte in range(at, at + len(field)):
        for bit in range(8):
            flipped = bytearray(blob)
            flipped[byte] ^= 1 << bit
            saved.write_bytes(bytes(flipped))
            with pytest.raises(CheckpointError):
                vn.load(saved)


def test_weights_read_from_a_checkpoint_are_verified_too(saved):
    """``--weights CK`` (finetune, zoo builders) reads a checkpoint through load_torch: the
    same checksum applies, so an edited file cannot slip in that way."""
    assert set(vn.io.load_torch(saved)) == set(vn.load(saved).state_dict())
    blob = bytearray(saved.read_bytes())
    blob[-3] ^= 0x10
    saved.write_bytes(bytes(blob))
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        vn.io.load_torch(saved)
