"""The files a command writes: resolved and checked before any work, written all or none.

Every command that writes (``train``, ``finetune``, ``import``, ``generate``, ``slide``)
declares its outputs here first, before it loads data or builds a network:

* each path is resolved to the name that will really be written (``np.save`` appends
  ``.npy`` to a name without it; :meth:`OutputPlan.add` takes that suffix);
* an empty path, a folder, two options naming the same file, a missing or unwritable
  parent folder, or an existing file without ``--overwrite`` is a
  :class:`~volnet.errors.ConfigError` (exit 2) that names the file and the fix -- before
  any work, so no epoch is spent on an output that cannot be written;
* outputs staged with :meth:`OutputPlan.stage` are written by :meth:`OutputPlan.commit`:
  every file first to a temporary file beside its target, then all renamed, so a failure
  (a full disk) leaves every target as it was, never half of the outputs.

Checkpoints written during a run (every epoch) are written atomically by
:func:`volnet.io.checkpoint.save`; their paths still go through :meth:`OutputPlan.add`.
Output folders (``train --samples DIR``) are created up front by :meth:`OutputPlan.folder`.
"""

from __future__ import annotations

import os

from volnet.errors import ConfigError
from volnet.io.atomic_file import sync_folder, write_part


class OutputPlan:
    """The outputs of one command run.

    Args:
        overwrite: whether existing files may be replaced (the command's ``--overwrite``).

    Example:
        >>> import tempfile, os
        >>> folder = tempfile.mkdtemp()
        >>> plan = OutputPlan(overwrite=False)
        >>> os.path.basename(plan.add("--npy", os.path.join(folder, "digits"), suffix=".npy"))
        'digits.npy'
        >>> plan.stage(os.path.join(folder, "digits.npy"), b"...")
        >>> plan.commit()
        >>> sorted(os.listdir(folder))
        ['digits.npy']
    """

    def __init__(self, overwrite: bool = False) -> None:
        self.overwrite = overwrite
        self.paths: dict[str, str] = {}     # resolved absolute path -> the option naming it
        self._staged: dict[str, bytes] = {}

    def add(self, option: str, path: str | os.PathLike | None, suffix: str = "",
            replaceable: bool = False) -> str | None:
        """Check the output ``option`` names; returns the path that will be written.

        Args:
            option: the command-line option (``--out``), for messages.
            path: the path given; None (option not used) returns None.
            suffix: what the writer appends when the name lacks it (``.npy``).
            replaceable: the file may exist even without ``--overwrite`` (``--resume``
                continuing the same checkpoint).

        Raises:
            ConfigError: empty path, a folder, a duplicate, a missing or read-only parent
                folder, or an existing file without ``--overwrite``.
        """
        if path is None:
            return None
        path = os.fspath(path)
        if not path.strip():
            raise ConfigError(f"{option} is empty; give a file name")
        if suffix and not path.endswith(suffix):
            path += suffix
        full = os.path.abspath(path)
        if full in self.paths:
            raise ConfigError(f"{option} and {self.paths[full]} both name {path}; give them "
                              "different files")
        folder = os.path.dirname(full)
        if os.path.isdir(full):
            raise ConfigError(f"{option} {path} is a folder; give a file name inside it")
        if not os.path.isdir(folder):
            raise ConfigError(f"{option} {path}: the folder {os.path.dirname(path) or folder} "
                              "does not exist; create it first (mkdir -p) or choose another path")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise ConfigError(f"{option} {path}: the folder {os.path.dirname(path) or folder} "
                              "is not writable; choose another path")
        if os.path.lexists(full) and not (self.overwrite or replaceable):
            raise ConfigError(f"{option} {path} already exists; choose another path or pass "
                              "--overwrite to replace it")
        self.paths[full] = option
        return path

    def folder(self, option: str, path: str | os.PathLike | None,
               pattern: str | None = None) -> str | None:
        """Create the output folder ``option`` names now (or refuse it), before any work.

        Args:
            option: the command-line option (``--samples``), for messages.
            path: the folder; None (option not used) returns None.
            pattern: a glob of the files the command writes there (``epoch-*.png``); any
                already there is refused without ``--overwrite``.

        Raises:
            ConfigError: empty path, a file in the way, a folder that cannot be created or
                written, or earlier outputs without ``--overwrite``.
        """
        if path is None:
            return None
        path = os.fspath(path)
        if not path.strip():
            raise ConfigError(f"{option} is empty; give a folder name")
        if os.path.exists(path) and not os.path.isdir(path):
            raise ConfigError(f"{option} {path} is a file, not a folder; choose another path")
        try:
            os.makedirs(path, exist_ok=True)
        except OSError as err:
            raise ConfigError(f"{option} {path}: cannot create the folder ({err.strerror}); "
                              "choose another path") from None
        if not os.access(path, os.W_OK | os.X_OK):
            raise ConfigError(f"{option} {path} is not writable; choose another folder")
        if pattern and not self.overwrite:
            import glob

            found = sorted(glob.glob(os.path.join(glob.escape(path), pattern)))
            if found:
                raise ConfigError(f"{option} {path} already holds {os.path.basename(found[0])}"
                                  f"{f' and {len(found) - 1} more' if len(found) > 1 else ''}"
                                  "; choose another folder or pass --overwrite")
        return path

    def stage(self, path: str, data: bytes) -> None:
        """Hold ``data`` for ``path`` (a path :meth:`add` returned) until :meth:`commit`."""
        full = os.path.abspath(path)
        if full not in self.paths:
            raise ConfigError(f"{path} was not declared as an output (OutputPlan.add)")
        self._staged[full] = bytes(data)

    def commit(self) -> None:
        """Write every staged file: all to temporary files first, then all renamed.

        A failure while writing removes the temporary files and leaves every target as it
        was. (The renames themselves are metadata operations on one file system each.)
        """
        temps: list[tuple[str, str]] = []
        try:
            for full, data in self._staged.items():
                temps.append((write_part(full, data), full))
        except BaseException:
            for tmp, _ in temps:
                if os.path.exists(tmp):
                    os.unlink(tmp)
            raise
        for tmp, full in temps:
            os.replace(tmp, full)
        for folder in {os.path.dirname(full) for _, full in temps}:
            sync_folder(folder)
        self._staged.clear()
