"""``stream-ctr --help`` answers without importing torch (it took 3-11 s when it did)."""

import subprocess
import sys


def test_building_the_cli_imports_neither_torch_nor_pandas():
    code = (
        "import sys\nfrom stream_ctr.cli import build_parser\nbuild_parser()\n"
        "print(sorted(m for m in ('torch', 'pandas', 'faust') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_package_still_exports_the_core_loop_lazily():
    import stream_ctr

    assert stream_ctr.test_then_train.__module__ == "stream_ctr.learning.loop" and "ft_lc" in stream_ctr.ARMS
