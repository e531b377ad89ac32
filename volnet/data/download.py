"""Fetch public datasets: SHA-256 verified, cached, resumable, written atomically.

Files land in :func:`cache_dir` (``$VOLNET_CACHE``, else
``$XDG_CACHE_HOME/volnet``, else ``~/.cache/volnet``). A download goes to
``<name>.part`` first, continues from where it stopped with an HTTP Range
request, is checked against its SHA-256 and only then renamed into place. With
no network the error says so and how to use local files (``--data DIR``).
"""

from __future__ import annotations

import hashlib
import os
import tarfile
import urllib.error
import urllib.request

from volnet.errors import DataError

_MNIST = {"train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
          "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
          "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
          "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"}
_FASHION = {"train-images-idx3-ubyte.gz": "08dc20ab1689590a0bcd66e874647b6ee8464e2d501b5a3f1f78831db19a3fdc",
            "train-labels-idx1-ubyte.gz": "b0197879cbda89f3dc7b894f9fd52b858e68ea4182b6947c9d8c2b67e5f18dcc",
            "t10k-images-idx3-ubyte.gz": "78dcbbfb5a27efaf1b6c1d616caca68560be8766c5bffcb2791df9273a534229",
            "t10k-labels-idx1-ubyte.gz": "42bd18137a62d5998cdeae52bf3a0676ac6b706f5cf8439b47bb5b151ae3dccf"}
# name -> (mirror URL prefixes tried in order, {file: sha256})
SOURCES = {
    "mnist": (["https://ossci-datasets.s3.amazonaws.com/mnist/",
               "https://storage.googleapis.com/cvdf-datasets/mnist/"], _MNIST),
    "fashion-mnist": (["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"], _FASHION),
    "cifar10": (["https://www.cs.toronto.edu/~kriz/"],
                {"cifar-10-binary.tar.gz":
                 "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd"}),
}
CHUNK = 1 << 20


def cache_dir() -> str:
    """Where downloaded datasets are kept (created on demand)."""
    root = os.environ.get("VOLNET_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "volnet")
    return root


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def download(url: str, dest: str, sha256: str, timeout: float = 30.0) -> str:
    """Fetch ``url`` to ``dest`` unless a verified copy is there; resume a ``.part`` file.

    Raises:
        DataError: network failure (with the offline hint) or checksum mismatch.
    """
    if os.path.isfile(dest) and sha256_file(dest) == sha256:
        return dest
    os.makedirs(os.path.dirname(os.path.abspath(dest)), exist_ok=True)
    part = dest + ".part"
    have = os.path.getsize(part) if os.path.isfile(part) else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        resumed = have and response.status == 206
        with open(part, "ab" if resumed else "wb") as out:
            out.writelines(iter(lambda: response.read(CHUNK), b""))
            out.flush()
            os.fsync(out.fileno())
    found = sha256_file(part)
    if found != sha256:
        os.unlink(part)   # a bad partial would poison every later resume
        raise DataError(f"checksum mismatch for {url}: expected sha256 {sha256}, got {found}; "
                        "the download was corrupted or the mirror changed. Try again, or "
                        "download the files yourself and pass --data DIR")
    os.replace(part, dest)
    return dest


def _fetch_one(name: str, mirrors: list[str], file: str, sha: str, folder: str) -> None:
    errors = []
    for prefix in mirrors:
        try:
            download(prefix + file, os.path.join(folder, file), sha)
            return
        except (urllib.error.URLError, OSError, TimeoutError) as err:
            errors.append(f"{prefix + file}: {getattr(err, 'reason', err)}")
    raise DataError(f"could not fetch dataset {name!r} ({'; '.join(errors)}). If this machine "
                    f"is offline, download the files elsewhere ({', '.join(SOURCES[name][1])}), "
                    "put them in a folder and pass --data DIR (or use the bundled "
                    "--data mnist-sample)")


def _extract_cifar(archive: str, folder: str) -> None:
    """Extract only the expected regular files of the CIFAR-10 binary archive."""
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar.getmembers():
            base = os.path.basename(member.name)
            if (member.isfile() and os.path.dirname(member.name) == "cifar-10-batches-bin"
                    and base.endswith((".bin", ".txt"))):
                target = os.path.join(folder, "cifar-10-batches-bin", base)
                os.makedirs(os.path.dirname(target), exist_ok=True)
                with tar.extractfile(member) as src, open(target + ".part", "wb") as dst:
                    dst.write(src.read())
                os.replace(target + ".part", target)


def fetch(name: str, root: str | None = None) -> str:
    """Download dataset ``name`` (mnist, fashion-mnist, cifar10) into the cache; return its folder."""
    if name not in SOURCES:
        raise DataError(f"unknown dataset {name!r}; downloadable: {', '.join(SOURCES)}")
    mirrors, files = SOURCES[name]
    folder = os.path.join(root or cache_dir(), name)
    for file, sha in files.items():
        _fetch_one(name, mirrors, file, sha, folder)
    if name == "cifar10" and not os.path.isfile(
            os.path.join(folder, "cifar-10-batches-bin", "test_batch.bin")):
        _extract_cifar(os.path.join(folder, "cifar-10-binary.tar.gz"), folder)
    return folder
