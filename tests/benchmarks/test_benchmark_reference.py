"""``python -m benchmarks.reference`` against a local NVlabs checkout: the same weights give the
same images in both implementations (the speed-up itself is a benchmark number, not asserted)."""
import json
import os
from pathlib import Path

import pytest

REPO = os.environ.get("STYLECAST_NVLABS_REPO")


@pytest.mark.skipif(not REPO or not (Path(REPO) / "training" / "networks.py").is_file(),
                    reason="set STYLECAST_NVLABS_REPO to a checkout of NVlabs/stylegan2-ada-pytorch "
                           "(the reference code is never part of StyleCast and cannot be downloaded in tests)")
def test_reference_benchmark_same_images(tmp_path):
    from benchmarks import reference
    report = reference.main(["--nvlabs-repo", REPO, "--configs", "demo", "--repeats", "2", "--backends", "torch",
                             "--out-dir", str(tmp_path)])
    (row,) = report["results"]
    assert row["max_abs_diff_vs_nvlabs"]["torch"] < 1e-4
    assert row["ms_per_batch"]["nvlabs"] > 0 and row["speedup_vs_nvlabs"]["torch"] > 0
    assert json.loads((tmp_path / "reference.json").read_text()) == json.loads(json.dumps(report))


def test_reference_benchmark_refuses_a_wrong_folder(tmp_path):
    from benchmarks import reference
    with pytest.raises(SystemExit, match="not a checkout of NVlabs"):
        reference.main(["--nvlabs-repo", str(tmp_path)])
