"""lesson_lib.course.plotting, .widgets and .env, headless (Agg, set in conftest.py)."""

import re

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from matplotlib.image import AxesImage

from lesson_lib.course import env
from lesson_lib.course.plotting import colorize, draw_camera, plot_point_cloud, show_images, to_numpy_image
from lesson_lib.course.widgets import stereo_depth_figure, stereo_explorer

H, W = 4, 6


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


# --------------------------------------------------------------------------- to_numpy_image


@pytest.mark.parametrize(
    "shape, out",
    [((1, 3, H, W), (H, W, 3)), ((3, H, W), (H, W, 3)), ((1, 1, H, W), (H, W)), ((H, W), (H, W))],
)
@pytest.mark.parametrize("kind", ["tensor", "array"])
def test_to_numpy_image_layouts(shape, out, kind):
    src = torch.arange(int(np.prod(shape)), dtype=torch.float32).reshape(shape)
    x = src if kind == "tensor" else src.numpy()
    a = to_numpy_image(x)
    assert isinstance(a, np.ndarray)
    assert a.shape == out
    # the values land where they belong: channel-last, not a reshape
    ref = src.reshape(-1, H, W) if len(shape) > 2 else src[None]
    ref = ref.permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(a, ref[..., 0] if len(out) == 2 else ref)


def test_to_numpy_image_takes_first_of_batch_and_detaches():
    x = torch.zeros(2, 3, H, W, requires_grad=True)
    with torch.no_grad():
        x[1] += 1
    a = to_numpy_image(x)
    assert a.shape == (H, W, 3) and np.all(a == 0)


def test_to_numpy_image_5d_raises():
    with pytest.raises(ValueError, match="shape"):
        to_numpy_image(torch.zeros(1, 1, 3, H, W))
    with pytest.raises(ValueError):
        to_numpy_image(np.zeros(5))


# --------------------------------------------------------------------------- colorize


def test_colorize_shape_range_and_mask():
    x = torch.linspace(1.0, 10.0, H * W).reshape(1, 1, H, W)
    mask = torch.ones(1, 1, H, W, dtype=torch.bool)
    mask[0, 0, 0, :3] = False
    rgb = colorize(x, mask=mask)
    assert rgb.shape == (H, W, 3)
    assert rgb.min() >= 0.0 and rgb.max() <= 1.0
    assert np.all(rgb[0, :3] == 0.5)
    # valid pixels are coloured, not grey
    assert not np.all(rgb[mask[0, 0].numpy()] == 0.5)
    # a larger value gets a brighter magma colour (monotone luminance)
    assert rgb[-1, -1].sum() > rgb[1, 0].sum()


def test_colorize_non_finite_is_grey():
    x = np.arange(H * W, dtype=np.float64).reshape(H, W)
    x[2, 2] = np.inf
    x[3, 3] = np.nan
    rgb = colorize(x)
    assert np.all(rgb[2, 2] == 0.5) and np.all(rgb[3, 3] == 0.5)
    assert np.isfinite(rgb).all()


def test_colorize_vmin_vmax():
    x = np.array([[2.0, 3.0, 4.0, 100.0]])
    rgb = colorize(x, cmap="viridis", vmin=2.0, vmax=4.0)
    cm = plt.get_cmap("viridis")
    np.testing.assert_allclose(rgb[0, 0], cm(0.0)[:3])
    np.testing.assert_allclose(rgb[0, 2], cm(1.0)[:3])
    np.testing.assert_allclose(rgb[0, 3], cm(1.0)[:3])  # clipped above vmax
    np.testing.assert_allclose(rgb[0, 1], cm(0.5)[:3], atol=1e-2)


def test_colorize_all_masked_raises():
    with pytest.raises(ValueError, match="nothing valid"):
        colorize(torch.ones(1, 1, H, W), mask=torch.zeros(1, 1, H, W, dtype=torch.bool))
    with pytest.raises(ValueError):
        colorize(np.full((H, W), np.inf))


# --------------------------------------------------------------------------- show_images


def _images_per_axes(fig):
    return [sum(isinstance(a, AxesImage) for a in ax.get_children()) for ax in fig.axes]


def test_show_images_one_image_per_axis_with_titles():
    imgs = [torch.rand(1, 3, H, W), torch.rand(1, 1, H, W), np.random.rand(H, W)]
    fig = show_images(imgs, titles=["a", "b", "c"])
    assert isinstance(fig, Figure)
    assert _images_per_axes(fig) == [1, 1, 1]
    assert [ax.get_title() for ax in fig.axes] == ["a", "b", "c"]
    assert fig.axes[0].images[0].get_array().shape == (H, W, 3)
    assert fig.axes[1].images[0].get_cmap().name == "magma"  # default for single channel
    plt.close(fig)


def test_show_images_grid_leaves_spare_axes_empty():
    fig = show_images([np.random.rand(H, W)] * 3, ncols=2)
    assert len(fig.axes) == 4
    assert sorted(_images_per_axes(fig)) == [0, 1, 1, 1]
    assert sum(len(ax.images) for ax in fig.axes) == 3
    plt.close(fig)


def test_show_images_per_image_cmap_and_colorbar():
    imgs = [np.random.rand(H, W), np.random.rand(H, W)]
    fig = show_images(imgs, cmap=["viridis", "gray"], colorbar=[True, False])
    image_axes = [ax for ax in fig.axes if ax.images]
    assert [ax.images[0].get_cmap().name for ax in image_axes] == ["viridis", "gray"]
    assert len(fig.axes) == 3  # two images + one colour bar
    plt.close(fig)


# --------------------------------------------------------------------------- 3-D


def test_plot_point_cloud_subsamples():
    rng = np.random.default_rng(0)
    pts = torch.from_numpy(rng.normal(size=(3, 1000)))
    cols = torch.from_numpy(rng.uniform(size=(3, 1000)))
    ax = plot_point_cloud(pts, cols, max_points=100)
    assert ax.name == "3d"
    assert len(ax.collections) == 1
    coll = ax.collections[0]
    assert len(coll.get_offsets()) == 100
    xs = np.asarray(coll._offsets3d[0])
    assert len(xs) == 100
    # the drawn points are some of ours (x is plotted as x)
    assert np.isin(xs, pts[0].numpy()).all()
    plt.close(ax.figure)


def test_plot_point_cloud_fewer_points_than_max():
    pts = np.random.rand(3, 50)
    ax = plot_point_cloud(pts, max_points=100)
    assert len(ax.collections[0].get_offsets()) == 50
    plt.close(ax.figure)


def test_plot_point_cloud_reuses_axes():
    fig = plt.figure()
    ax = fig.add_subplot(projection="3d")
    out = plot_point_cloud(np.random.rand(3, 20), ax=ax)
    assert out is ax and len(ax.collections) == 1
    plt.close(fig)


@pytest.mark.parametrize(
    "points, colors",
    [
        (np.zeros((4, 10)), None),
        (np.zeros((10, 3)), None),
        (np.zeros(30), None),
        (np.zeros((3, 10)), np.zeros((3, 9))),
        (np.zeros((3, 10)), np.zeros((10, 3))),
    ],
)
def test_plot_point_cloud_bad_shapes(points, colors):
    with pytest.raises(ValueError, match="expected shape"):
        plot_point_cloud(points, colors)


def test_draw_camera_adds_eight_segments():
    ax = plot_point_cloud(np.random.rand(3, 20))
    before = len(ax.lines)
    T = torch.eye(4)
    T[:3, 3] = torch.tensor([1.0, 2.0, 3.0])
    out = draw_camera(ax, T, size=0.5, label="cam")
    assert out is ax
    assert len(ax.lines) - before == 8
    assert len(ax.texts) == 1
    # the apex sits at the camera centre (plotted as x, z, -y)
    xs, ys, zs = ax.lines[before].get_data_3d()
    assert (xs[0], ys[0], zs[0]) == pytest.approx((1.0, 3.0, -2.0))
    plt.close(ax.figure)


# --------------------------------------------------------------------------- widgets


@pytest.mark.parametrize("f, B, d, e", [(721.0, 0.54, 20.0, 1.0), (994.978, 0.193, 7.5, 0.5)])
def test_stereo_depth_figure_title(f, B, d, e):
    fig = stereo_depth_figure(f, B, d, e)
    assert isinstance(fig, Figure)
    title = fig.axes[0].get_title()
    assert f"{f * B / d:.2f}" in title
    assert f"[{f * B / (d + e):.2f}, {f * B / (d - e):.2f}]" in title
    assert len(fig.axes) == 2
    plt.close(fig)


@pytest.mark.parametrize("d, e", [(1.0, 1.0), (0.5, 1.0), (0.0, 0.5)])
def test_stereo_depth_figure_rejects_disparity_not_above_error(d, e):
    n = len(plt.get_fignums())
    with pytest.raises(ValueError, match="must exceed"):
        stereo_depth_figure(721.0, 0.54, d, e)
    assert len(plt.get_fignums()) == n  # no half-made figure left behind


def test_stereo_explorer_sliders_and_defaults():
    import ipywidgets as w

    ui = stereo_explorer()
    assert isinstance(ui, w.interactive)
    sliders = {s._kwarg: s for s in ui.kwargs_widgets}
    assert set(sliders) == {"focal", "baseline", "disparity", "disparity_error"}
    assert all(isinstance(s, w.FloatSlider) for s in sliders.values())
    assert sliders["focal"].value == 721.0
    assert sliders["baseline"].value == pytest.approx(0.54)
    assert ui.kwargs["focal"] == 721.0 and ui.kwargs["baseline"] == pytest.approx(0.54)
    d, e = sliders["disparity"].value, sliders["disparity_error"].value
    assert d > e > 0


# --------------------------------------------------------------------------- env


@pytest.fixture
def restore_globals():
    np_opts = np.get_printoptions()
    with mpl.rc_context():
        yield
    np.set_printoptions(**np_opts)
    torch.set_printoptions(profile="default")


def test_setup_notebook_seeds_and_device(restore_globals):
    dev = env.setup_notebook(123)
    assert isinstance(dev, torch.device)
    assert dev.type == ("cuda" if torch.cuda.is_available() else "cpu")
    a = torch.rand(3)
    env.setup_notebook(123)
    b = torch.rand(3)
    env.setup_notebook(124)
    c = torch.rand(3)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert mpl.rcParams["image.cmap"] == "magma"


def test_seed_everything_seeds_numpy_and_random():
    import random

    env.seed_everything(5)
    r1, n1 = random.random(), np.random.rand()
    env.seed_everything(5)
    assert (random.random(), np.random.rand()) == (r1, n1)


def test_pick_device_prefer():
    assert env.pick_device("cpu") == torch.device("cpu")


def test_environment_report():
    report = env.environment_report()
    assert torch.__version__ in report
    assert ("CUDA" in report) or ("CPU only" in report)
    assert ("CUDA" in report) == torch.cuda.is_available()


def test_versions():
    v = env.versions()
    assert {"python", "torch", "kornia"} <= set(v)
    assert re.match(r"\d+\.\d+", v["python"])
    assert v["torch"] == torch.__version__.split("+")[0] or v["torch"] == torch.__version__


# --------------------------------------------------------------------------- maps with colour bars


def _luminance(rgba):
    r, g, b = rgba[:3]
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def test_show_map_draws_the_values_with_a_labelled_colour_bar():
    from lesson_lib.course.plotting import show_map

    depth = np.array([[2.0, 4.0, 8.0], [16.0, np.nan, 32.0]])
    fig, ax = plt.subplots()
    bar = show_map(ax, depth, "depth", vmin=2.0, vmax=32.0)
    im = ax.get_images()[0]
    data = np.ma.getdata(im.get_array())
    assert np.allclose(data[np.isfinite(depth)], depth[np.isfinite(depth)])  # values, not RGB
    assert bool(np.ma.getmaskarray(im.get_array())[1, 1])  # the NaN is masked (grey)
    assert bar.ax.get_ylabel().startswith("depth (m)")
    assert (bar.vmin, bar.vmax) == (2.0, 32.0)
    assert im.get_cmap()(np.nan).__len__() == 4
    with pytest.raises(ValueError, match="unknown quantity 'heat'"):
        show_map(ax, depth, "heat")
    with pytest.raises(ValueError, match="nothing valid"):
        show_map(ax, np.full((2, 2), np.nan), "depth")


def test_near_is_bright_for_depth_and_disparity_alike():
    """One convention: a near pixel is brighter than a far one in a depth map and in a
    disparity map (the opposite of drawing both with the same colour map)."""
    from lesson_lib.course.plotting import show_map

    depth = np.array([[2.0, 50.0]])  # near, far
    disparity = 100.0 / depth
    lum = {}
    for name, values in (("depth", depth), ("disparity", disparity)):
        fig, ax = plt.subplots()
        show_map(ax, values, name, vmin=float(values.min()), vmax=float(values.max()))
        im = ax.get_images()[0]
        rgba = im.to_rgba(im.get_array())
        lum[name] = (_luminance(rgba[0, 0]), _luminance(rgba[0, 1]))
    assert lum["depth"][0] > lum["depth"][1] + 0.3
    assert lum["disparity"][0] > lum["disparity"][1] + 0.3


def test_show_maps_mixes_images_and_maps_with_units():
    from lesson_lib.course.plotting import show_maps

    img = np.random.default_rng(0).random((8, 12, 3))
    d = np.linspace(1, 5, 96).reshape(8, 12)
    fig = show_maps([img, d, d], [None, "disparity", "error"], ["image", "disparity", "error"], units=[None, "px", "m"])
    labels = [a.get_ylabel() for a in fig.axes if a.get_ylabel()]
    assert labels[0].startswith("disparity (px)") and labels[1].startswith("error (m)")
    assert len(fig.axes) == 5  # three panels, two colour bars
    with pytest.raises(ValueError, match="2 quantities"):
        show_maps([img, d, d], [None, "depth"])


def test_flow_legend_matches_flow_to_rgb():
    from lesson_lib.course.plotting import flow_legend, flow_to_rgb

    fig, ax = plt.subplots()
    flow_legend(ax, max_flow=2.0, size=41)
    wheel = ax.get_images()[0].get_array()
    # the pixel right of the centre shows u = +2 px, v = 0; the one below, v = +2 (image axes)
    right = flow_to_rgb(np.array([[[2.0]], [[0.0]]]), max_flow=2.0)[0, 0]
    down = flow_to_rgb(np.array([[[0.0]], [[2.0]]]), max_flow=2.0)[0, 0]
    assert np.allclose(wheel[20, 40], right) and np.allclose(wheel[40, 20], down)
    assert not np.allclose(right, down)


def test_show_maps_greys_out_each_maps_mask():
    from lesson_lib.course.plotting import show_maps

    d = np.linspace(1, 5, 96).reshape(8, 12)
    valid = np.ones((8, 12), bool)
    valid[0, :3] = False
    fig = show_maps([d, d], ["disparity", "error"], masks=[valid, None], vmin=1.0, vmax=5.0)
    first, second = (a.get_images()[0].get_array() for a in fig.axes if a.get_images() and a.get_label() != "<colorbar>")
    assert np.ma.getmaskarray(first)[0, :3].all() and not np.ma.getmaskarray(first)[1:].any()
    assert not np.ma.getmaskarray(second).any()
    with pytest.raises(ValueError, match="1 masks"):
        show_maps([d, d], ["disparity", "error"], masks=[valid])


def test_similarity_maps_span_minus_one_to_one_with_their_own_colour_map():
    """SSIM and its structure term lie in [-1, 1]: drawn on that range they keep negative values
    (not clipped to 0), in a colour map that no distance or error map uses."""
    from lesson_lib.course.plotting import QUANTITIES, show_map

    used = {QUANTITIES[q].cmap for q in ("depth", "disparity", "error", "loss")}
    assert QUANTITIES["similarity"].cmap not in used
    s = np.array([[-0.8, 0.0, 1.0]])
    fig, ax = plt.subplots()
    bar = show_map(ax, s, "similarity", vmin=-1.0, vmax=1.0)
    assert (bar.vmin, bar.vmax) == (-1.0, 1.0)
    assert bar.ax.get_ylabel() == "similarity, 1 = identical, 0 white"


# --------------------------------------------------------------------------- depth on your own images


def test_image_depth_figure_and_depth_explorer(tmp_path):
    from PIL import Image

    from lesson_lib import methods, weights
    from lesson_lib.course.widgets import depth_explorer, image_depth_figure

    models = {"Monodepth": methods.load_model(weights.path("monodepth_lr.pt"))[:2]}
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (48, 120, 3), dtype=np.uint8)
    fig = image_depth_figure(img, models, "random")
    images = [a for a in fig.axes if a.get_images()]
    assert len(images) == 2  # the image and one map
    bars = [a for a in fig.axes if a.get_label() == "<colorbar>"]
    assert len(bars) == 1 and "inverse depth (x median)" in bars[0].get_ylabel()
    rel = images[1].get_images()[0].get_array()
    assert rel.shape == (48, 120) and np.ma.median(rel) == pytest.approx(1.0, abs=0.05)
    with pytest.raises(ValueError, match="image"):
        image_depth_figure(np.zeros((5, 5)), models)
    with pytest.raises(ValueError, match="models"):
        image_depth_figure(img, {})
    Image.fromarray(img).save(tmp_path / "a.png")
    box = depth_explorer(models, tmp_path)
    dropdown = box.children[0].children[0]
    assert [o[0] for o in dropdown.options] == ["a.png"]
