"""engine.latent.direction_set: Direction / DirectionSet validation, JSON round trips, to_path."""
import json

import numpy as np
import pytest

from engine.latent.latent_basis import LatentBasis
from engine.latent.direction_set import Direction, DirectionSet

W_DIM = 16


def make_basis(k=4, checkpoint_hash="a" * 64, origin="global", seed=0) -> LatentBasis:
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((W_DIM, W_DIM)))
    stdev = np.linspace(2.0, 0.5, k).astype(np.float32)
    return LatentBasis(directions=q[:k].astype(np.float32), stdev=stdev, mean=np.zeros(W_DIM, np.float32),
                       explained_variance=stdev.astype(np.float64) ** 2, origin=origin,
                       checkpoint_hash=checkpoint_hash, meta={})


def test_direction_normalises_and_validates():
    d = Direction("mouth_open", np.arange(1, W_DIM + 1, dtype=np.float64), stdev=2.0, layers=(4, 7))
    assert d.vector.dtype == np.float32 and np.linalg.norm(d.vector) == pytest.approx(1.0, abs=1e-6)
    assert d.layers == (4, 7) and d.w_dim == W_DIM
    assert d.layer_mask(10).tolist() == [False] * 4 + [True] * 4 + [False] * 2
    for bad in (dict(name="1bad"), dict(name="has space"), dict(vector=np.zeros(W_DIM)),
                dict(vector=np.full(W_DIM, np.nan)), dict(vector=np.ones((2, 8))), dict(stdev=0.0),
                dict(stdev=float("inf")), dict(layers=(5, 4)), dict(layers=(-1, 2)), dict(component=-1)):
        kw = dict(name="ok", vector=np.ones(W_DIM), stdev=1.0) | bad
        with pytest.raises(ValueError):
            Direction(**kw)
    with pytest.raises(ValueError, match="outside"):
        d.layer_mask(6)


def test_round_trip_is_exact(tmp_path):
    b = make_basis()
    ds = DirectionSet()
    ds.add_from_basis(b, 1, "mouth_open", layers=(4, 7), source="g.npz")
    ds.add_from_basis(b, 3, "yaw")
    path = ds.save(tmp_path / "d.json")
    back = DirectionSet.load(path, num_ws=12, w_dim=W_DIM, checkpoint_hash="a" * 64)
    assert back.names == ["mouth_open", "yaw"] and back.checkpoint_hash == "a" * 64
    for name in back.names:
        a, c = ds[name], back[name]
        assert np.array_equal(a.vector, c.vector) and a.vector.dtype == c.vector.dtype
        assert (a.stdev, a.layers, a.component, a.origin, a.source) == (c.stdev, c.layers, c.component, c.origin, c.source)
    assert np.array_equal(back["mouth_open"].vector, b.directions[1])
    assert back["mouth_open"].stdev == pytest.approx(float(b.stdev[1]))
    assert back["yaw"].layers is None and back["mouth_open"].component == 1


def test_refuses_mixing_checkpoints_and_duplicate_names():
    ds = DirectionSet()
    ds.add_from_basis(make_basis(), 0, "a")
    with pytest.raises(ValueError, match="checkpoint"):
        ds.add_from_basis(make_basis(checkpoint_hash="b" * 64), 1, "b")
    with pytest.raises(ValueError, match="already"):
        ds.add_from_basis(make_basis(), 1, "a")
    ds.add_from_basis(make_basis(), 1, "a", replace=True)
    assert ds["a"].component == 1
    with pytest.raises(ValueError, match="out of range"):
        ds.add_from_basis(make_basis(), 4, "c")
    with pytest.raises(KeyError):
        ds["nope"]


def test_load_validates(tmp_path):
    good = DirectionSet()
    good.add_from_basis(make_basis(), 0, "a", layers=(2, 3))
    good.add_from_basis(make_basis(), 1, "b")
    data = good.to_dict()

    def write(d):
        p = tmp_path / "bad.json"
        p.write_text(json.dumps(d) if not isinstance(d, str) else d)
        return p

    cases = {
        "not json": "{",
        "wrong format": {**data, "format": "other"},
        "short vector": {**data, "directions": [dict(data["directions"][0], vector=[1.0, 0.0]), data["directions"][1]]},
        "not unit": {**data, "directions": [dict(data["directions"][0], vector=[2.0] + [0.0] * (W_DIM - 1))]},
        "duplicate": {**data, "directions": [data["directions"][0], data["directions"][0]]},
        "bad w_dim": {**data, "w_dim": 3},
        "unknown key": {**data, "directions": [dict(data["directions"][0], extra=1)]},
    }
    for what, d in cases.items():
        with pytest.raises(ValueError):
            DirectionSet.load(write(d))
    p = write(data)
    with pytest.raises(ValueError, match="outside"):
        DirectionSet.load(p, num_ws=3)
    with pytest.raises(ValueError, match="checkpoint"):
        DirectionSet.load(p, checkpoint_hash="c" * 64)
    with pytest.raises(ValueError, match="w_dim"):
        DirectionSet.load(p, w_dim=8)
    with pytest.raises(FileNotFoundError):
        DirectionSet.load(tmp_path / "missing.json")


def test_to_path_rows_and_masks():
    b = make_basis()
    ds = DirectionSet()
    ds.add_from_basis(b, 2, "jaw", layers=(1, 2))
    ds.add_from_basis(b, 0, "pose")
    basis, masks = ds.to_path(6, ["pose", "jaw"])
    assert isinstance(basis, LatentBasis) and basis.k == 2
    assert np.array_equal(basis.directions, b.directions[[0, 2]])
    assert np.allclose(basis.stdev, b.stdev[[0, 2]])
    assert masks.shape == (2, 6) and masks.dtype == bool
    assert masks[0].all() and masks[1].tolist() == [False, True, True, False, False, False]
    assert basis.checkpoint_hash == "a" * 64
    with pytest.raises(ValueError, match="outside"):
        ds.to_path(2)


def test_named_direction_on_a_layer_range_moves_only_those_layers():
    from engine.latent.path import LatentPath

    b = make_basis()
    ds = DirectionSet()
    ds.add_from_basis(b, 1, "mouth_open", layers=(4, 7))
    ds.add_from_basis(b, 0, "pose")
    num_ws = 10
    basis, masks = ds.to_path(num_ws)
    path = LatentPath(basis, num_ws, layer_masks=masks)
    anchor = np.random.default_rng(1).standard_normal((num_ws, W_DIM)).astype(np.float32)
    path.set_anchor(ws=anchor)
    ws = path(np.array([[2.0, 0.0]], dtype=np.float32))[0].numpy()
    changed = np.abs(ws - anchor).max(axis=1) > 0
    assert changed.tolist() == [False] * 4 + [True] * 4 + [False] * 2
    assert np.allclose(ws[5] - anchor[5], 2.0 * b.stdev[1] * b.directions[1], atol=1e-5)
    ws = path(np.array([[0.0, 1.0]], dtype=np.float32))[0].numpy()
    assert (np.abs(ws - anchor).max(axis=1) > 0).all()
