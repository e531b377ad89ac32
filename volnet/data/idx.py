"""The IDX file format of MNIST and Fashion-MNIST, gzipped or not, read safely.

Layout (big-endian): two zero bytes, a type code (0x08 = unsigned byte), the
number of dimensions D, then D uint32 sizes, then the payload in C order.
Sizes are checked against what the file holds and against the memory budget
(:mod:`volnet.limits`) *before* anything is allocated. A gzipped file may
declare at most what its compressed size can expand to (deflate's ceiling is
1032:1), is decompressed chunk by chunk into one preallocated array, and only
up to the size its header declares (plus one byte, to detect trailing data),
so a decompression bomb costs nothing.
"""

from __future__ import annotations

import gzip
import io
import os
import struct
import zlib

import numpy as np

from volnet.errors import DataError
from volnet.limits import check_budget, open_regular

_TYPES = {0x08: np.dtype(">u1"), 0x09: np.dtype(">i1"), 0x0B: np.dtype(">i2"),
          0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
MAX_DEFLATE_RATIO = 1032   # the most one byte of deflate data can expand to (RFC 1951)
CHUNK = 1 << 20


def _open(path: str):
    """(stream over the file's decompressed bytes, gzipped?, size of the file on disk)."""
    raw = open_regular(path, DataError)
    try:
        size = os.fstat(raw.fileno()).st_size
        gzipped = raw.read(2) == b"\x1f\x8b"
        raw.seek(0)
    except OSError as err:
        raw.close()
        raise DataError(f"cannot read {path}: {err.strerror}") from None
    return (gzip.GzipFile(fileobj=raw, mode="rb") if gzipped else raw), gzipped, size, raw


def _read_into(stream, out: np.ndarray, path: str) -> None:
    """Fill ``out`` from ``stream`` chunk by chunk (no second copy of the payload)."""
    view, filled = memoryview(out.reshape(-1).view(np.uint8)), 0
    while filled < len(view):
        try:
            got = stream.readinto(view[filled:filled + CHUNK])
        except (OSError, EOFError, zlib.error) as err:   # corrupt or cut gzip stream
            raise DataError(f"{path}: cannot decompress the payload ({err}); the file is "
                            "corrupt or truncated, download it again") from None
        if not got:
            raise DataError(f"{path}: truncated payload: expected {len(view)} bytes, found "
                            f"{filled}")
        filled += got


def _read_exact(stream, n: int, path: str, what: str) -> bytes:
    try:
        data = stream.read(n)
    except (OSError, EOFError, zlib.error) as err:   # corrupt or cut gzip stream
        raise DataError(f"{path}: cannot decompress the {what} ({err}); the file is corrupt "
                        "or truncated, download it again") from None
    if len(data) != n:
        raise DataError(f"{path}: truncated {what}: expected {n} bytes, found {len(data)}")
    return data


def _header(stream, path: str, ndim: int) -> tuple[np.dtype, tuple[int, ...]]:
    magic = _read_exact(stream, 4, path, "header")
    if magic[:2] != b"\x00\x00":
        raise DataError(f"{path}: not an IDX file (magic number {magic.hex()} must start "
                        "with two zero bytes)")
    if magic[2] not in _TYPES:
        raise DataError(f"{path}: unknown IDX type code 0x{magic[2]:02x}")
    if magic[3] != ndim:
        kind = "image" if ndim == 3 else "label"
        raise DataError(f"{path}: expected {ndim}-D {kind} file, header declares {magic[3]}-D")
    dims = struct.unpack(f">{ndim}I", _read_exact(stream, 4 * ndim, path, "header"))
    return _TYPES[magic[2]], tuple(int(d) for d in dims)


def read_idx(path: str | os.PathLike, ndim: int, max_bytes: int | str | None = None
             ) -> np.ndarray:
    """Read an IDX file whose header must declare ``ndim`` dimensions.

    Args:
        path: an IDX file, optionally gzipped (detected by content, not name).
        ndim: 3 for an image file (N, rows, cols), 1 for a label file (N,).
        max_bytes: memory budget for the array (default ``$VOLNET_MAX_BYTES`` or 2 GiB).

    Returns:
        The array in native byte order (uint8 for MNIST).

    Raises:
        DataError: bad magic number, wrong rank, truncated or trailing data,
            or a header declaring more data than the file could hold (a
            ``BudgetError`` too when it exceeds ``max_bytes``).

    Example:
        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "labels-idx1-ubyte")
        >>> write_idx(path, np.array([3, 1, 4], dtype=np.uint8))
        >>> read_idx(path, ndim=1)
        array([3, 1, 4], dtype=uint8)
    """
    path = os.fspath(path)
    stream, gzipped, size, raw = _open(path)
    with raw, stream:
        dtype, dims = _header(stream, path, ndim)
        nbytes = dtype.itemsize
        for d in dims:   # Python ints: no overflow
            nbytes *= d
        available = size - 4 - 4 * ndim
        if not gzipped and nbytes > available:
            raise DataError(f"{path}: truncated payload: header declares {dims} = {nbytes} "
                            f"bytes, the file holds {available}; the file is corrupt or "
                            "truncated")
        if gzipped and nbytes > MAX_DEFLATE_RATIO * size:
            raise DataError(f"{path}: header declares {dims} = {nbytes} bytes, more than a "
                            f"{size}-byte gzip file can expand to ({MAX_DEFLATE_RATIO}:1 at "
                            "most); the file is corrupt or forged")
        copies = 1 if dtype.itemsize == 1 else 2   # byte-swapping makes a second array
        check_budget(copies * nbytes, f"{path}: IDX array {dims} of {dtype.name}", max_bytes,
                     DataError)
        try:
            out = np.empty(dims, dtype=dtype)
        except ValueError:   # e.g. (0, 2**32 - 1, 2**32 - 1): no bytes, but no valid shape
            raise DataError(f"{path}: header declares dimensions {dims}, which NumPy cannot "
                            "represent; the file is corrupt") from None
        _read_into(stream, out, path)
        if _read_exact_or_less(stream, 1):
            raise DataError(f"{path}: trailing bytes after the {nbytes}-byte payload "
                            f"declared by the header {dims}")
    return out.astype(dtype.newbyteorder("="), copy=False)


def _read_exact_or_less(stream, n: int) -> bytes:
    try:
        return stream.read(n)
    except (OSError, EOFError, zlib.error):
        return b""


def write_idx(path: str | os.PathLike, array: np.ndarray, compress: bool = False) -> None:
    """Write ``array`` (uint8) as an IDX file, gzipped when ``compress``; used by tests/tools."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    head = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = head + array.tobytes()
    if compress:
        buffer = io.BytesIO()
        with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as gz:
            gz.write(data)
        data = buffer.getvalue()
    with open(path, "wb") as f:
        f.write(data)
