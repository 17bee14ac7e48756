"""recsys_kedro._imports: Mosaic's unused dataset families load only when something uses them."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def _run(code: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.strip()


def test_a_process_that_imports_the_package_skips_the_families_until_used():
    out = _run(
        """
        import sys
        import recsys_kedro
        import torch  # scans sys.modules while it imports: must not trigger the families
        from streaming import MDSWriter, StreamingDataset
        from streaming.base.converters import dataframe_to_mds
        print("sklearn" in sys.modules, "streaming.text.c4" in sys.modules)
        text = sys.modules["streaming.text"]
        print(text.__name__, hasattr(text, "__file__"))
        import streaming
        print(streaming.text.StreamingC4.__module__, "streaming.text.c4" in sys.modules)
        from streaming.vision import StreamingCIFAR10
        print(StreamingCIFAR10.__module__)
        """
    )
    assert out.splitlines() == [
        "False False",
        "streaming.text False",
        "streaming.text.c4 True",
        "streaming.vision.cifar10",
    ]
