"""Compiled (numba) kernels, one module per family; the NumPy modules one level up are the
reference path and choose these through ``volnet.runtime.backend.compiled()``.

Importing a module here imports numba, so only callers that already checked
``backend.compiled()`` import them. Whoever imports one first (a kernel call, or a
documentation tool walking the package) goes through ``backend.numba_module()`` here, before
any ``cache=True`` kernel is decorated: numba fixes each kernel's cache folder when it is
decorated, so without this a direct import would cache the kernels inside the installed
package instead of the user's cache folder.
"""

from volnet.runtime import backend

backend.numba_module()
