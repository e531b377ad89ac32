"""Images of an image folder, decoded only when indexed: a rank reads only its shard's files.

``read_image_folder`` decodes every file up front, which suits one process. In
data-parallel training each rank needs only the examples of its own shard of
each epoch (and of its slice of the held-out set), so ``ImageFiles`` stands in
for the (N, C, H, W) uint8 array: ``files[indices]`` decodes those files and
nothing else, and memory holds a batch, not the dataset.

Example:
    >>> import tempfile, PIL.Image
    >>> folder = tempfile.mkdtemp()
    >>> PIL.Image.new("RGB", (5, 4), (255, 0, 0)).save(f"{folder}/red.png")
    >>> files = ImageFiles([f"{folder}/red.png"], (3, 2, 2))
    >>> files.shape, files[[0]][0, :, 0, 0].tolist(), files.reads
    ((1, 3, 2, 2), [255, 0, 0], 1)
"""

from __future__ import annotations

import numpy as np

from volnet.data.images import load_image
from volnet.errors import DataError


class ImageFiles:
    """(N, C, H, W) uint8 images of ``paths``, each decoded (and resized to ``input_shape``)
    when indexed; ``reads`` counts the files decoded so far.

    Indexing follows NumPy's (an integer, a slice, an integer array or a boolean
    mask) and returns arrays; ``np.asarray(files)`` decodes them all.
    """

    dtype = np.dtype(np.uint8)
    ndim = 4

    def __init__(self, paths, input_shape) -> None:
        self.paths = list(paths)
        self.shape = (len(self.paths), *(int(s) for s in input_shape))
        self.reads = 0

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index) -> np.ndarray:
        if isinstance(index, (int, np.integer)):
            self.reads += 1
            return load_image(self.paths[index], self.shape[1:])
        try:
            picked = np.arange(len(self.paths))[index]
        except IndexError as err:
            raise DataError(f"image files: index {index!r} does not fit {len(self)} files: "
                            f"{err}") from None
        out = np.empty((len(picked), *self.shape[1:]), np.uint8)
        for i, j in enumerate(picked):
            out[i] = load_image(self.paths[j], self.shape[1:])
        self.reads += len(picked)
        return out

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        return self[:] if dtype is None else self[:].astype(dtype)

    def channel_stats(self, comm=None, chunk: int = 256) -> tuple[tuple, tuple]:
        """Per-channel mean and std on the 0-1 scale, rounded to 4 decimals (as
        ``read_image_folder``'s datasets); with ``comm``, each rank decodes a
        contiguous 1/W of the files and the sums are reduced."""
        rank, world = (comm.rank, comm.world_size) if comm is not None else (0, 1)
        lo, hi = len(self) * rank // world, len(self) * (rank + 1) // world
        sums = np.zeros((2, self.shape[1]), np.float64)   # sum and sum of squares
        for start in range(lo, hi, chunk):
            x = self[start:min(start + chunk, hi)].astype(np.float64) / 255
            sums += (x.sum(axis=(0, 2, 3)), np.einsum("nchw,nchw->c", x, x))
        if comm is not None:
            comm.allreduce_([sums], "reduction of the image statistics")
        count = len(self) * self.shape[2] * self.shape[3]
        mean = sums[0] / count
        std = np.sqrt(np.maximum(sums[1] / count - mean ** 2, 0.0))
        return (tuple(mean.round(4).tolist()),
                tuple(np.maximum(std, 1e-3).round(4).tolist()))
