"""The floor under ``functional/`` and ``train/``: which kernels run (``backend``), how many
threads BLAS and the compiled kernels use (``openblas``, ``thread_policy``), the block
thread pool and its per-thread scratch (``block_threads``), and the one helper that
launches a compiled kernel (``launch``). Nothing here imports numba until a compiled
kernel is first asked for.
"""
