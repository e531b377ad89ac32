"""Atomic file writes: the old file or the new one, never half of one.

A temporary file in the target directory is written, flushed and fsynced, then
``os.replace``-d over the target and the directory fsynced. The temporary file is
named after the target and the writing process (``.<name>.<pid>-<random>.part``);
one left by a killed process is removed by the next write to the same path.
Checkpoints, image grids, heat maps and exports use it.
"""

from __future__ import annotations

import glob
import os
import tempfile


def umask() -> int:
    """The process umask, read without changing it where Linux allows (threads may be saving)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError, OverflowError):
        return True   # exists (another user's) or cannot tell: keep its file
    return True


def remove_stale_parts(path: str) -> list[str]:
    """Delete temporary ``.part`` files of earlier saves to ``path`` whose writer is gone.

    A save killed with SIGKILL cannot clean up; its ``.<name>.<pid>-<random>.part``
    stays. Files of live processes (a concurrent save) are left alone.
    """
    folder, name = os.path.split(os.path.abspath(path))
    removed = []
    for part in glob.glob(os.path.join(glob.escape(folder), f".{glob.escape(name)}.*.part")):
        pid = os.path.basename(part)[len(name) + 2:].split("-", 1)[0]
        if pid.isdigit() and not _pid_alive(int(pid)):
            try:
                os.unlink(part)
                removed.append(part)
            except OSError:
                pass
    return removed


def write_part(path: str, data: bytes) -> str:
    """Write ``data`` to a new fsynced temporary file beside ``path``; returns its name.

    The caller renames it over ``path`` (``os.replace``) or deletes it. Writers of
    several files (:class:`volnet.commands.outputs.OutputPlan`) write every part first
    and rename them all at the end.
    """
    folder, name = os.path.split(os.path.abspath(path))
    remove_stale_parts(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.{os.getpid()}-", suffix=".part", dir=folder)
    try:
        os.chmod(tmp, 0o666 & ~umask())   # mkstemp makes 0600; give the usual file mode
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return tmp


def atomic_write(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old or the new file, never a mix."""
    tmp = write_part(path, data)
    try:
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    sync_folder(os.path.dirname(os.path.abspath(path)))


def sync_folder(folder: str) -> None:
    """fsync ``folder`` so a rename into it is durable (where the platform allows it)."""
    try:   # not every platform lets us open a directory
        dir_fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)
