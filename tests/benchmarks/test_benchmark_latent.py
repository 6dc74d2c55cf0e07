"""Smoke test of ``python -m benchmarks.latent --quick``: it runs and writes the promised JSON + PNG.

No timing assertions; the random mapping net is shrunk to 64 wide so the run takes seconds.
"""
import json

from benchmarks import latent


def test_quick_run_writes_json_and_png(tmp_path, monkeypatch):
    monkeypatch.setenv("STYLECAST_CACHE", str(tmp_path / "cache"))
    report = latent.main(["--quick", "--quiet", "--random-width", "64", "--random-layers", "4", "--n-samples", "3000",
                          "--gd-steps", "10", "--out-dir", str(tmp_path)])
    json_path, png_path = tmp_path / "latent.json", tmp_path / "latent.png"
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = json.loads(json_path.read_text())
    assert data == json.loads(json.dumps(report))
    assert data["benchmark"] == "latent" and data["zero_rtol"] == latent.ZERO_RTOL
    assert [g["name"] for g in data["generators"]] == ["demo", "random64"]
    for g in data["generators"]:
        assert g["pca"]["n_samples"] == 3000 and g["pca"]["seconds"] > 0
        assert g["local"]["median_s"] > 0 and g["local"]["repeats"] == 2
        sp = g["spectrum"]
        assert len(sp["near_zero"]) == 3 and all(0 <= n <= sp["n_singular_values"] for n in sp["near_zero"])
        assert sp["n_singular_values"] == min(g["z_dim"], g["w_dim"])
        tr = g["traversal"]
        assert set(tr["mean"]) == {"local", "local-follow", "global"}
        assert len(tr["rows"]) == 3 * tr["seeds"] * tr["directions"]
        for row in tr["rows"]:
            for key in ("step", "off_direction", "null_fraction", "manifold_distance", "pixel_change"):
                assert row[key] >= 0, (key, row)
        # the local path ends on the manifold by construction: m(z_end) = w_end
        assert all(r["manifold_distance_exact"] < 1e-3 for r in tr["rows"] if r["method"].startswith("local"))
        # the global step is exactly along v_i
        assert all(r["off_direction"] < 1e-4 for r in tr["rows"] if r["method"] == "global")
