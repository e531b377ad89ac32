"""Pretrained weights: torchvision's published ImageNet files, fetched, verified and loaded.

``fetch_weights("resnet18")`` downloads torchvision's file once into the
cache (``$VOLNET_CACHE/weights``), writing ``<file>.part`` first and renaming
it only after its SHA-256 checks out, so a broken download never leaves a
file under the final name. torchvision names each file after the first hex
digits of its SHA-256 (``resnet18-f37072fd.pth``), and ``torch.hub`` verifies
downloads against that prefix; volnet does the same, and checks the full
digest where it is recorded here. The file is then read by the allow-listed
:func:`load_torch` (nothing is unpickled), so even a tampered file cannot run
code. Offline, the error says which URL to fetch by hand.
"""

from __future__ import annotations

import fnmatch
import functools
import inspect
import os
import re
import urllib.error
import urllib.request

from volnet.data.download import CHUNK, sha256_file
from volnet.errors import CheckpointError, ConfigError, StateDictError
from volnet.io.torch_load import load_torch

BASE_URL = "https://download.pytorch.org/models/"
# volnet zoo name -> torchvision's ImageNet-1k (IMAGENET1K_V1) file on BASE_URL.
WEIGHTS = {
    "alexnet_torchvision": "alexnet-owt-7be5be79.pth",
    "vgg11": "vgg11-8a719046.pth", "vgg13": "vgg13-19584684.pth",
    "vgg16": "vgg16-397923af.pth", "vgg19": "vgg19-dcbb9e9d.pth",
    "vgg11_bn": "vgg11_bn-6002323d.pth", "vgg13_bn": "vgg13_bn-abd245e5.pth",
    "vgg16_bn": "vgg16_bn-6c64b313.pth", "vgg19_bn": "vgg19_bn-c79401a0.pth",
    "resnet18": "resnet18-f37072fd.pth", "resnet34": "resnet34-b627a593.pth",
    "resnet50": "resnet50-0676ba61.pth", "resnet101": "resnet101-63fe2227.pth",
    "resnet152": "resnet152-394f9c45.pth",
    "googlenet": "googlenet-1378be20.pth",
    "inception_v3": "inception_v3_google-0cc3c7bd.pth",
}
# Full SHA-256 digests where known; the others are checked against the file-name prefix.
SHA256 = {
    "resnet18-f37072fd.pth": "f37072fd47e89c5e827621c5baffa7500819f7896bbacec160b1a16c560e07ec",
}
# torchvision's checkpoints keep auxiliary heads a model built without them does not have.
AUX_KEYS = ("aux1.*", "aux2.*", "AuxLogits.*")


def weights_dir() -> str:
    """``<volnet cache>/weights``, the cache shared with the dataset downloads."""
    from volnet.data.download import cache_dir

    return os.path.join(cache_dir(), "weights")


def expected_digest(file: str) -> str:
    """The SHA-256 (or its published prefix) a weight file must have."""
    if file in SHA256:
        return SHA256[file]
    match = re.search(r"-([0-9a-f]{8,64})\.", file)
    if not match:
        raise ConfigError(f"weight file {file!r} records no SHA-256 prefix in its name")
    return match.group(1)


def fetch_weights(name: str, cache: str | None = None, base_url: str | None = None,
                  timeout: float = 60.0) -> str:
    """Path of the verified weight file for zoo model ``name``, downloading it if needed.

    Args:
        name: a key of :data:`WEIGHTS` (``resnet18``, ``vgg16``, ...).
        cache: folder for the files (default :func:`weights_dir`).
        base_url: mirror to download from instead of :data:`BASE_URL`
            (``http://``, ``https://`` or ``file://``).
        timeout: seconds to wait for the server.

    Raises:
        ConfigError: no published weights for ``name``.
        CheckpointError: offline or unreachable (with the URL to fetch by hand),
            or the download does not match its checksum.
    """
    if name not in WEIGHTS:
        raise ConfigError(f"no published weights for {name!r}; available: "
                          f"{', '.join(sorted(WEIGHTS))}")
    file = WEIGHTS[name]
    folder = cache or weights_dir()
    dest = os.path.join(folder, file)
    digest = expected_digest(file)
    if os.path.isfile(dest) and sha256_file(dest).startswith(digest):
        return dest
    url = (base_url or BASE_URL).rstrip("/") + "/" + file
    os.makedirs(folder, exist_ok=True)
    part = dest + ".part"
    try:
        _download(url, part, timeout)
    except (urllib.error.URLError, OSError, TimeoutError) as err:
        if os.path.exists(part):
            os.unlink(part)
        raise CheckpointError(
            f"could not download the {name} weights from {url} "
            f"({getattr(err, 'reason', err)}). If this machine is offline, fetch that file on "
            f"another machine and pass it with --weights FILE (or copy it to {dest}).") from None
    found = sha256_file(part)
    if not found.startswith(digest):
        os.unlink(part)   # never keep or resume from a file that failed its check
        raise CheckpointError(f"checksum mismatch for {url}: expected SHA-256 {digest}..., got "
                              f"{found}; the download was corrupted or the file was changed")
    os.replace(part, dest)
    return dest


def _download(url: str, part: str, timeout: float) -> None:
    with urllib.request.urlopen(url, timeout=timeout) as response, open(part, "wb") as out:
        expected = response.headers.get("Content-Length")
        out.writelines(iter(lambda: response.read(CHUNK), b""))
        out.flush()
        os.fsync(out.fileno())
        if expected is not None and out.tell() != int(expected):
            raise OSError(f"connection closed after {out.tell()} of {expected} bytes")


def load_weights(net, source, strict: bool = True, ignore: tuple[str, ...] = ()):
    """Load a state dict (a dict, or a ``.pth``/``.pt``/``.safetensors`` file) into ``net``.

    Args:
        net: the volnet network, with PyTorch/torchvision-compatible keys.
        source: a dict of arrays or a path read by :func:`load_torch`.
        strict: every key must match (after ``ignore``); see ``Layer.load_state_dict``.
        ignore: glob patterns of checkpoint keys to drop first (e.g. ``"aux1.*"``).

    Returns:
        ``net``, for chaining.

    Example:
        >>> import volnet as vn
        >>> net = vn.models.lenet5()
        >>> other = load_weights(vn.models.lenet5(seed=1), net.state_dict())
        >>> bool((other[0].params["weight"] == net[0].params["weight"]).all())
        True
    """
    state = source if isinstance(source, dict) else load_torch(source)
    if ignore:
        state = {k: v for k, v in state.items()
                 if not any(fnmatch.fnmatchcase(k, p) for p in ignore)}
    try:
        net.load_state_dict(state, strict=strict)
    except StateDictError as err:
        where = "" if isinstance(source, dict) else f" from {os.fspath(source)}"
        raise StateDictError(f"{err} (loading{where}; is it the same architecture and "
                             "number of classes?)") from None
    return net


def with_weights(builder, name: str | None = None):
    """Give a zoo builder a ``weights=`` argument: ``None`` (fresh initialisation, the
    default), ``"imagenet"`` (torchvision's file, downloaded once) or a file path.

    Example:
        >>> import tempfile, os, volnet as vn
        >>> from volnet.io.safetensors import serialize
        >>> path = os.path.join(tempfile.mkdtemp(), "lenet.safetensors")
        >>> _ = open(path, "wb").write(serialize(vn.models.lenet5(seed=7).state_dict()))
        >>> lenet5 = with_weights(vn.models.MODELS["lenet5"])   # the plain builder
        >>> net = lenet5(weights=path)       # seed 0 initialisation, then seed 7's weights
        >>> bool((net[0].params["weight"] == vn.models.lenet5(seed=7)[0].params["weight"]).all())
        True
    """
    if getattr(builder, "accepts_weights", False):
        return builder
    name = name or builder.__name__

    @functools.wraps(builder)
    def build(*args, weights=None, **kwargs):
        net = builder(*args, **kwargs)
        if weights is None:
            return net
        path = fetch_weights(name) if weights == "imagenet" else weights
        return load_weights(net, path, ignore=absent_aux_heads(net))

    params = list(inspect.signature(builder).parameters.values())
    at = next((i for i, p in enumerate(params) if p.kind is p.VAR_KEYWORD), len(params))
    params.insert(at, inspect.Parameter("weights", inspect.Parameter.KEYWORD_ONLY, default=None))
    build.__signature__ = inspect.signature(builder).replace(parameters=params)
    build.accepts_weights = True
    return build


def absent_aux_heads(net) -> tuple[str, ...]:
    """The :data:`AUX_KEYS` patterns for auxiliary heads ``net`` was built without."""
    own = set(net.state_dict())
    return tuple(p for p in AUX_KEYS if not any(fnmatch.fnmatchcase(k, p) for k in own))
