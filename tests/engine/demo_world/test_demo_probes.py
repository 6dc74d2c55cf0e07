"""engine.demo_world.probes (and its CLI, train_probes): a short CPU training on a few thousand renders reads mouth_open and
blink back (held-out R² >= 0.9); files round-trip; the CLI's one-line errors."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from engine.demo_world import dataset as ds
from engine.demo_world import probes as pr
from engine.demo_world import train_probes
from engine.demo_world.params import IDENTITY_FIELDS, MOTION_FIELDS

N_TRAIN = 3200


@pytest.fixture(scope="module")
def trained():
    # one thread: on a shared 2-core box a second OpenMP thread waits on a busy core (10x slower)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        data = ds.render_range(seed=1, start=0, stop=N_TRAIN, size=128)
        probes = pr.train_probes(data["images"], data["identity"], data["motion"], epochs=8, seed=0, progress=False)
    finally:
        torch.set_num_threads(threads)
    return probes, data


def test_probes_read_mouth_and_blink(trained):
    probes, _ = trained
    r2 = probes.report["r2"]
    print("\nheld-out R² (%d train / %d val):" % (probes.report["n_train"], probes.report["n_val"]))
    for name in probes.names:
        print(f"  {name:15s} {r2[name]:+.3f}")
    assert set(probes.names) == set(MOTION_FIELDS) | set(IDENTITY_FIELDS)
    assert r2["mouth_open"] >= 0.9 and r2["blink"] >= 0.9
    # coarse identity and pose are read too (weaker bars: short training)
    assert r2["skin_r"] > 0.7 and r2["yaw"] > 0.5


def test_predict_on_fresh_renders_and_other_sizes(trained):
    probes, _ = trained
    fresh = ds.render_range(seed=2, start=0, stop=64, size=128)
    out = probes.predict(fresh["images"])
    assert set(out) == set(probes.names) and all(v.shape == (64,) and v.dtype == np.float32 for v in out.values())
    assert 0.0 <= out["mouth_open"].min() and out["mouth_open"].max() <= 1.0
    r = np.corrcoef(out["mouth_open"], fresh["motion"][:, MOTION_FIELDS.index("mouth_open")])[0, 1]
    assert r > 0.9
    big = ds.render_range(seed=2, start=0, stop=8, size=192)   # any square size is resized
    assert probes.predict(big["images"])["blink"].shape == (8,)
    with pytest.raises(ValueError, match="uint8"):
        probes.predict(fresh["images"].astype(np.float32))


def test_save_load_round_trip(trained, tmp_path):
    probes, data = trained
    path = pr.save_probes(probes, tmp_path / "probes.safetensors")
    side = json.loads((tmp_path / "probes.json").read_text())
    assert side["names"] == list(probes.names) and "r2" in side["report"]
    again = pr.load_probes(path)
    a, b = probes.predict(data["images"][:16]), again.predict(data["images"][:16])
    for name in probes.names:
        np.testing.assert_array_equal(a[name], b[name])
    assert again.report["r2"]["blink"] == pytest.approx(probes.report["r2"]["blink"])
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(pr.ProbesError, match="not a probes file"):
        pr.load_probes(bad)
    with pytest.raises(pr.ProbesError, match="no such probes file"):
        pr.load_probes(tmp_path / "missing.safetensors")


def test_r2_scores():
    t = np.array([0.0, 1.0, 2.0, 3.0])
    assert pr.r2_scores({"a": t}, {"a": t})["a"] == 1.0
    assert pr.r2_scores({"a": np.full(4, 1.5)}, {"a": t})["a"] == pytest.approx(0.0)


def test_cli_trains_and_reports(tmp_path, capsys):
    data = tmp_path / "faces"
    ds.write_dataset(data, 40, seed=3, size=32, shard_size=20, progress=False)
    out = tmp_path / "p.safetensors"
    assert train_probes.main(["--data", str(data), "--out", str(out), "--epochs", "1", "--batch-size", "8",
                    "--input-size", "16", "--width", "4", "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "mouth_open" in text and "blink" in text and out.is_file()
    assert pr.load_probes(out).cfg.input_size == 16
    with pytest.raises(SystemExit) as e:
        train_probes.main(["--data", str(tmp_path / "nothing"), "--out", str(out)])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no such data-set folder" in err
    with pytest.raises(SystemExit):
        train_probes.main(["--data", str(data), "--out", str(out), "--input-size", "48"])
    assert "power of two" in capsys.readouterr().err


def test_cli_trains_an_eye_probe_on_its_crop(tmp_path, capsys):
    """--names and --crop: a probe of a few outputs on one region (the eye probe that reads gaze)."""
    data = tmp_path / "faces"
    ds.write_dataset(data, 24, seed=5, size=32, shard_size=24, progress=False)
    out = tmp_path / "eyes.safetensors"
    assert train_probes.main(["--data", str(data), "--out", str(out), "--epochs", "1", "--batch-size", "8",
                              "--input-size", "16", "--width", "4", "--no-progress", "--names", "gaze_x,gaze_y",
                              "--crop", "0.28,0.28,0.72,0.58"]) == 0
    assert "gaze_y" in capsys.readouterr().out
    probes = pr.load_probes(out)
    assert probes.names == ("gaze_x", "gaze_y") and probes.cfg.crop == pytest.approx((0.28, 0.28, 0.72, 0.58))
    assert set(probes.predict(ds.load_shards(data)["images"][:3])) == {"gaze_x", "gaze_y"}
    for bad, match in ((["--names", "gaze_x,nose_tip"], "unknown outputs"), (["--crop", "0.5,0.2,0.4,0.9"], "--crop"),
                       (["--crop", "1,2"], "--crop")):
        with pytest.raises(SystemExit) as e:
            train_probes.main(["--data", str(data), "--out", str(out), "--no-progress", *bad])
        err = capsys.readouterr().err
        assert e.value.code == 2 and err.count("\n") == 1 and match in err, err
