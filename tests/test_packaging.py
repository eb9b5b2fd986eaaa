"""What ``pip install`` puts on a user's machine: the agents and topic declarations only under ``stream_ctr``."""

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_installs_everything_under_the_project_namespace(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    (wheel,) = tmp_path.glob("stream_ctr-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"stream_ctr"}, tops  # no top-level `agents` or `topics` to clash with other packages
    # Every module of the source folders is in the wheel, under its installed name.
    sources = {f"stream_ctr/{p.relative_to(ROOT / 'stream_ctr')}" for p in (ROOT / "stream_ctr").rglob("*.py")}
    for folder in ("agents", "topics"):
        sources |= {f"stream_ctr/{folder}/{p.relative_to(ROOT / folder)}" for p in (ROOT / folder).rglob("*.py")}
    assert sources <= set(names), sorted(sources - set(names))
