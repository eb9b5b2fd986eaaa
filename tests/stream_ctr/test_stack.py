"""``stream-ctr up`` (:class:`stream_ctr.stack.Stack` behind the CLI) on the real broker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from stream_ctr.stack import get_json

pytestmark = pytest.mark.broker


def test_up_runs_the_service_and_ctrl_c_stops_everything_it_started(settings_factory, tmp_path):
    settings = settings_factory()
    env = {**os.environ, **settings.to_env()}
    out = open(tmp_path / "up.out", "wb")
    # Ctrl-C's default disposition in the child: a test run started in the background of a non-interactive shell
    # ignores SIGINT, and a child would inherit that and never see the Ctrl-C this test sends.
    up = subprocess.Popen([sys.executable, "-m", "stream_ctr.cli", "up", "--logs", str(tmp_path)], env=env,
                          stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    url = f"http://127.0.0.1:{settings.web_port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if "Ctrl-C stops everything" in (tmp_path / "up.out").read_text(errors="replace"):
                break
            assert up.poll() is None, (tmp_path / "up.out").read_text()[-2000:]
            time.sleep(0.5)
        else:
            raise AssertionError("stream-ctr up did not become ready")
        assert get_json(f"{url}/healthz")[0] == 200
        assert get_json(f"{url}/v1/stats")[1]["applied"] == 0
        up.send_signal(signal.SIGINT)  # Ctrl-C
        assert up.wait(60) == 0
    finally:
        if up.poll() is None:
            up.kill()
    for port in (settings.web_port, settings.web_port + 1):  # worker and trainer are gone, their ports free
        with pytest.raises(OSError):
            get_json(f"http://127.0.0.1:{port}/healthz", timeout=2)
