"""The floor under ``functional/`` and ``train/``: which kernels run (``backend``), how many
threads BLAS and the compiled kernels use (``openblas``, ``thread_policy``), the block
thread pool, its split products and per-thread scratch (``block_threads``), the one helper
that launches a compiled kernel (``launch``), and malloc's settings while training
(``allocator``). Nothing here imports numba until a compiled
kernel is first asked for.
"""
