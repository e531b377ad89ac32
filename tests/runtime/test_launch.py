"""Compiled kernels' launch helper (volnet.runtime.launch)."""

import sys
import threading

from volnet.runtime import launch

_MODULE = '''
import threading
started, proceed = threading.Event(), threading.Event()
started.set()
proceed.wait(timeout=30)        # the import is half done while another thread calls run()


class _Kernel:
    def serial(self, x):
        return ("serial", x)

    def parallel(self, x):
        return ("parallel", x)


double = _Kernel()
'''


def test_run_waits_for_a_module_another_thread_is_importing(tmp_path, monkeypatch):
    # block threads reach a kernel's first call together: one imports its module while
    # the other finds it in sys.modules without the kernel yet
    (tmp_path / "volnet_launch_probe.py").write_text(_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "volnet_launch_probe", raising=False)
    importer = threading.Thread(target=launch.run, args=("volnet_launch_probe", "double", 1, 0))
    importer.start()
    try:
        probe = None
        for _ in range(30000):   # in sys.modules as soon as its import begins: wait for its
            probe = sys.modules.get("volnet_launch_probe")    # first lines to have run
            if probe is not None and hasattr(probe, "started"):
                break
            threading.Event().wait(0.001)
        assert probe is not None and hasattr(probe, "started"), "the import never began"
        assert probe.started.wait(timeout=30) and not hasattr(probe, "double")   # half done
        threading.Timer(0.2, probe.proceed.set).start()
        assert launch.run("volnet_launch_probe", "double", 1, 7) == ("serial", 7)
        assert launch.run("volnet_launch_probe", "double", launch.PARALLEL_MIN, 7) == (
            "parallel", 7)
    finally:
        module = sys.modules.get("volnet_launch_probe")
        if module is not None and hasattr(module, "proceed"):
            module.proceed.set()
        importer.join(timeout=30)
    sys.modules.pop("volnet_launch_probe", None)
