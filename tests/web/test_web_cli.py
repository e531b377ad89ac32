"""``volnet demo`` as a user runs it: prints its address, serves, trains, and stops on Ctrl-C."""

import re
import signal
import subprocess
import sys

import httpx
from websockets.sync.client import connect


def test_volnet_demo_serves_and_stops_cleanly_on_ctrl_c():
    proc = subprocess.Popen([sys.executable, "-m", "volnet", "demo", "--port", "0", "--no-browser"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        url = re.search(r"volnet demo at (http://127\.0\.0\.1:\d+/)", line).group(1)
        with httpx.Client(base_url=url, timeout=30) as client:
            page = client.get("/")
            token = re.search(r'name="volnet-token" content="([^"]+)"', page.text).group(1)
            started = client.post("/api/train", json={"action": "start"},
                                  headers={"X-Volnet-Token": token})
            assert started.json()["state"] == "training"
        ws_url = url.replace("http://", "ws://") + f"ws?token={token}"
        with connect(ws_url, origin=url.rstrip("/")) as tab:   # a tab stays connected
            assert '"state"' in tab.recv(timeout=30)
            proc.send_signal(signal.SIGINT)   # Ctrl-C while training and watched
            out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "volnet demo stopped" in out
    assert "Traceback" not in err


def test_volnet_demo_reports_a_taken_port():
    import socket

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    try:
        result = subprocess.run([sys.executable, "-m", "volnet", "demo", "--no-browser", "--port",
                                 str(taken.getsockname()[1])], capture_output=True, text=True,
                                timeout=60, check=False)
    finally:
        taken.close()
    assert result.returncode == 2
    assert "cannot listen on 127.0.0.1" in result.stderr and "Traceback" not in result.stderr
