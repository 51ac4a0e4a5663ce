"""lesson_lib.data: the Middlebury "Motorcycle" pair (layouts, calibration, the direction
convention on the real pixels, corrupt copies) and the PFM reader/writer."""

from pathlib import Path

import numpy as np
import pytest
import skimage.data
import torch

from lesson_lib.data import MiddleburyCalibration, load_middlebury_motorcycle, read_pfm, write_pfm

H, W = 500, 741
CALIB = {"focal": 994.978, "cx": 311.193, "cy": 254.877, "doffs": 31.086, "baseline": 0.193001}


@pytest.fixture(scope="module")
def pair():
    return load_middlebury_motorcycle()


# --------------------------------------------------------------------------- layouts


def test_images_layout_and_range(pair):
    for img in (pair.left, pair.right):
        assert img.shape == (1, 3, H, W)
        assert img.dtype == torch.float32
        assert float(img.min()) >= 0.0 and float(img.max()) <= 1.0
        # really scaled from uint8, not left in 0..255 nor collapsed to a constant
        assert float(img.max()) > 0.5 and float(img.std()) > 0.05
    assert not torch.equal(pair.left, pair.right)


def test_disparity_and_valid_mask(pair):
    d, v = pair.disparity, pair.valid
    assert d.shape == (1, 1, H, W) and d.dtype == torch.float32
    assert v.shape == (1, 1, H, W) and v.dtype == torch.bool
    assert torch.isfinite(d).all()
    assert torch.all(d[~v] == 0)
    assert torch.all(d[v] > 0)
    share = float(v.float().mean())
    assert 0.90 < share < 0.95, share  # the file marks about 7 % as +inf


def test_calibration_values(pair):
    c = pair.calibration
    assert isinstance(c, MiddleburyCalibration)
    for name, value in CALIB.items():
        assert getattr(c, name) == pytest.approx(value, abs=1e-9), name


def test_K_matrix(pair):
    K = pair.calibration.K_tensor()
    assert K.shape == (1, 3, 3) and K.dtype == torch.float32
    expected = torch.tensor(
        [[[994.978, 0.0, 311.193], [0.0, 994.978, 254.877], [0.0, 0.0, 1.0]]]
    )
    torch.testing.assert_close(K, expected)
    assert pair.calibration.K_tensor(torch.float64).dtype == torch.float64
    # K itself is a NumPy (3, 3) array, as every K of lesson_lib.data (world.CameraConfig.K, WorldSequence.K)
    assert isinstance(pair.calibration.K, np.ndarray) and pair.calibration.K.shape == (3, 3)
    np.testing.assert_allclose(pair.calibration.K, expected[0].double().numpy(), rtol=0, atol=1e-4)


def test_depth_in_metres(pair):
    z = pair.depth()
    assert z.shape == (1, 1, H, W)
    v = pair.valid
    zv = z[v]
    assert float(zv.min()) >= 2.1 and float(zv.max()) <= 5.05
    assert torch.all(z[~v] == 0)
    # Z = f B / (d + doffs), checked on one valid pixel by hand
    iy, ix = [int(i) for i in torch.nonzero(v[0, 0])[len(zv) // 2]]
    d = float(pair.disparity[0, 0, iy, ix])
    want = CALIB["focal"] * CALIB["baseline"] / (d + CALIB["doffs"])
    assert float(z[0, 0, iy, ix]) == pytest.approx(want, rel=1e-5)


def test_to_device(pair):
    moved = pair.to("cpu")
    assert moved.left.device.type == "cpu"
    for name in ("left", "right", "disparity", "valid"):
        assert torch.equal(getattr(moved, name), getattr(pair, name)), name
    assert moved.calibration == pair.calibration and moved.source == pair.source
    assert moved is not pair
    moved64 = pair.to(torch.device("cpu"))
    assert moved64.disparity.shape == pair.disparity.shape


# --------------------------------------------------------------------------- convention


def test_left_x_matches_right_x_minus_d_on_real_pixels(pair):
    """Warp the right image to the left by hand with the ground truth: sampling at x - d must
    reproduce the left image far better than x + d ("left x matches right x - d")."""
    L = pair.left[0].permute(1, 2, 0).numpy()
    R = pair.right[0].permute(1, 2, 0).numpy()
    d = pair.disparity[0, 0].numpy()
    ys, xs = np.nonzero(pair.valid[0, 0].numpy())

    def error(sign: int) -> float:
        xr = np.rint(xs + sign * d[ys, xs]).astype(int)
        inside = (xr >= 0) & (xr < W)
        assert inside.mean() > 0.9
        return float(np.abs(L[ys[inside], xs[inside]] - R[ys[inside], xr[inside]]).mean())

    minus, plus = error(-1), error(+1)
    assert minus * 3 < plus, (minus, plus)
    assert minus < 0.06  # it really matches, not just "less bad"


# --------------------------------------------------------------------------- corrupt data


def _real():
    return skimage.data.stereo_motorcycle()


def test_missing_data_names_folder_and_files(monkeypatch):
    def broken():
        raise OSError("No such file: motorcycle_left.png")

    monkeypatch.setattr(skimage.data, "stereo_motorcycle", broken)
    with pytest.raises(FileNotFoundError) as info:
        load_middlebury_motorcycle()
    msg = str(info.value)
    folder = str(Path(skimage.__file__).parent / "data")
    assert folder in msg
    for name in ("motorcycle_left.png", "motorcycle_right.png", "motorcycle_disp.npz"):
        assert name in msg
    assert isinstance(info.value.__cause__, OSError)


def test_wrong_shape_image_raises(monkeypatch):
    left, right, disp = _real()
    monkeypatch.setattr(skimage.data, "stereo_motorcycle", lambda: (left[:-1], right, disp))
    with pytest.raises(ValueError, match=r"left image.*\(500, 741, 3\)"):
        load_middlebury_motorcycle()


def test_wrong_shape_disparity_raises(monkeypatch):
    left, right, disp = _real()
    monkeypatch.setattr(skimage.data, "stereo_motorcycle", lambda: (left, right, disp.T))
    with pytest.raises(ValueError, match=r"disparity.*\(500, 741\)"):
        load_middlebury_motorcycle()


def test_wrong_dtype_raises(monkeypatch):
    left, right, disp = _real()
    monkeypatch.setattr(
        skimage.data, "stereo_motorcycle", lambda: (left.astype(np.float64), right, disp)
    )
    with pytest.raises(ValueError, match="uint8"):
        load_middlebury_motorcycle()


def test_nan_disparity_raises(monkeypatch):
    left, right, disp = _real()
    nan = np.full_like(disp, np.nan)
    monkeypatch.setattr(skimage.data, "stereo_motorcycle", lambda: (left, right, nan))
    with pytest.raises(ValueError, match="NaN"):
        load_middlebury_motorcycle()


def test_mostly_invalid_or_negative_disparity_raises(monkeypatch):
    left, right, disp = _real()
    all_inf = np.full_like(disp, np.inf)
    monkeypatch.setattr(skimage.data, "stereo_motorcycle", lambda: (left, right, all_inf))
    with pytest.raises(ValueError, match="corrupt"):
        load_middlebury_motorcycle()
    negative = np.where(np.isfinite(disp), -disp, disp).astype(np.float32)
    monkeypatch.setattr(skimage.data, "stereo_motorcycle", lambda: (left, right, negative))
    with pytest.raises(ValueError, match="corrupt"):
        load_middlebury_motorcycle()


# --------------------------------------------------------------------------- PFM


@pytest.mark.parametrize("shape", [(4, 5), (4, 5, 3)])
def test_pfm_round_trip(tmp_path, shape):
    rng = np.random.default_rng(0)
    a = rng.normal(size=shape).astype(np.float32) * 100
    a[1, 2] = np.inf
    path = tmp_path / "x.pfm"
    write_pfm(path, a)
    b = read_pfm(path)
    assert b.shape == shape and b.dtype == np.float32
    np.testing.assert_array_equal(b, a)  # inf compares equal to inf
    assert np.isinf(b[1, 2]).all()
    header = path.read_bytes()[:2]
    assert header == (b"PF" if len(shape) == 3 else b"Pf")


def test_pfm_rows_top_to_bottom(tmp_path):
    a = np.zeros((3, 4), np.float32)
    a[0] = 7.0  # only the top row differs
    path = tmp_path / "top.pfm"
    write_pfm(path, a)
    b = read_pfm(path)
    assert np.all(b[0] == 7.0) and np.all(b[1:] == 0.0)
    # the file itself stores the bottom row first (PFM order): top row is last in the body
    body = np.frombuffer(path.read_bytes()[-3 * 4 * 4 :], "<f4").reshape(3, 4)
    assert np.all(body[-1] == 7.0) and np.all(body[0] == 0.0)


def test_pfm_big_endian_written_by_hand(tmp_path):
    want = np.arange(6, dtype=np.float32).reshape(2, 3) + 0.5  # rows [0.5 1.5 2.5], [3.5 4.5 5.5]
    path = tmp_path / "be.pfm"
    path.write_bytes(b"Pf\n3 2\n1.0\n" + want[::-1].astype(">f4").tobytes())
    got = read_pfm(path)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, want)


def test_pfm_big_endian_colour_by_hand(tmp_path):
    want = np.arange(2 * 2 * 3, dtype=np.float32).reshape(2, 2, 3)
    path = tmp_path / "be3.pfm"
    path.write_bytes(b"PF\n2 2\n1.0\n" + want[::-1].astype(">f4").tobytes())
    np.testing.assert_array_equal(read_pfm(path), want)


def test_pfm_missing_file(tmp_path):
    path = tmp_path / "nope.pfm"
    with pytest.raises(FileNotFoundError, match="nope.pfm"):
        read_pfm(path)


def test_pfm_not_a_pfm(tmp_path):
    path = tmp_path / "image.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    with pytest.raises(ValueError) as info:
        read_pfm(path)
    assert str(path) in str(info.value)


def test_pfm_truncated(tmp_path):
    path = tmp_path / "cut.pfm"
    write_pfm(path, np.ones((8, 8), np.float32))
    raw = path.read_bytes()
    path.write_bytes(raw[:-10])
    with pytest.raises(ValueError) as info:
        read_pfm(path)
    assert "truncated" in str(info.value) and str(path) in str(info.value)


@pytest.mark.parametrize("shape", [(5,), (4, 5, 2), (4, 5, 3, 1)])
def test_write_pfm_wrong_shape(tmp_path, shape):
    path = tmp_path / "bad.pfm"
    with pytest.raises(ValueError, match="expected shape"):
        write_pfm(path, np.zeros(shape, np.float32))
    assert not path.exists()


def test_image_to_tensor_layout_and_errors():
    from lesson_lib.data import image_to_tensor

    img = np.zeros((2, 3, 3), dtype=np.uint8)
    img[1, 2] = (255, 0, 51)
    t = image_to_tensor(img)
    assert t.shape == (1, 3, 2, 3) and t.dtype == torch.float32
    assert t[0, :, 1, 2].tolist() == pytest.approx([1.0, 0.0, 0.2])
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8"):
        image_to_tensor(img.astype(np.float32))
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8"):
        image_to_tensor(img[..., 0])
