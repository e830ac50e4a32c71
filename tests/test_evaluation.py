"""The accuracy axes: CIFAR-10-C corruptions (against slow obvious versions), the cifar10-jpeg dataset, and the
resumable measurement table."""
from __future__ import annotations

import colorsys
import io
import json
import os

import numpy as np
import pandas as pd
import pytest
import torch

from kstar_utils import datasets
from kstar_utils.models import corruptions as C
from kstar_utils.models import evaluation as E


@pytest.fixture(scope="module")
def images():
    """64 real CIFAR-10 test images, (64, 32, 32, 3) uint8."""
    x, _, _ = datasets.cifar10_sample_arrays("test")
    return np.ascontiguousarray(x[:64])


# ---------------------------------------------------------------------------------------------- corruptions
@pytest.mark.parametrize("name", list(C.CORRUPTIONS))
def test_corruptions_are_deterministic_and_keep_shape_and_dtype(name, images):
    a = C.corrupt(images, name, 3, seed=7)
    assert a.shape == images.shape and a.dtype == np.uint8
    assert np.array_equal(a, C.corrupt(images, name, 3, seed=7))
    assert not np.array_equal(a, images)
    other = C.corrupt(images, name, 3, seed=8)
    assert np.array_equal(a, other) != C.CORRUPTIONS[name].random  # only random ones depend on the seed
    # each image is corrupted on its own: the result of image 5 does not depend on the images around it
    if not C.CORRUPTIONS[name].random:
        assert np.array_equal(C.corrupt(images[5:6], name, 3), a[5:6])


@pytest.mark.parametrize("name", [n for n in C.CORRUPTIONS if n != "glass_blur"])
def test_distortion_grows_with_severity(name, images):
    d = [np.abs(C.corrupt(images, name, s).astype(float) - images).mean() for s in C.SEVERITIES]
    assert np.all(np.diff(d) > 0), (name, d)


def test_glass_blur_grows_with_its_shuffling_iterations(images):
    # severities 2 -> 4 and 3 -> 5 double the pixel shuffling at a fixed blur. Its blur width alone is not monotone
    # in the distance to the clean image (severities 1-3: a wider blur smooths the shuffling's error away).
    d = {s: np.abs(C.corrupt(images, "glass_blur", s).astype(float) - images).mean() for s in C.SEVERITIES}
    assert d[4] > d[2] + 3 and d[5] > d[3] + 3


def test_corrupt_refuses_bad_input(images):
    with pytest.raises(ValueError, match="closest.*gaussian_noise"):
        C.corrupt(images, "gausian_noise", 1)
    with pytest.raises(ValueError, match="severity"):
        C.corrupt(images, "contrast", 6)
    with pytest.raises(ValueError, match="32x32"):
        C.corrupt(images.astype(np.float32), "contrast", 1)
    with pytest.raises(ValueError, match="32x32"):
        C.corrupt(images[:, :16], "contrast", 1)


def test_gaussian_noise_is_clipped_noise_truncated_to_uint8(images):
    c = C.CORRUPTIONS["gaussian_noise"].parameters[1]
    rng = np.random.default_rng(0)
    noise = np.random.default_rng(0).normal(size=images.shape, scale=c)
    expected = np.uint8(np.clip(images / 255.0 + noise, 0, 1) * 255)
    assert np.array_equal(C.gaussian_noise(images, c, rng), expected)


def test_disk_kernel_is_the_blurred_aliased_disk():
    g = np.exp(-np.arange(-1, 2) ** 2 / (2 * 0.4 ** 2))
    g /= g.sum()
    expected = np.zeros((17, 17))
    expected[7:10, 7:10] = np.outer(g, g)  # radius 0.3: the disk is the centre pixel alone
    assert np.allclose(C.disk(0.3, 0.4), expected)
    plus = C.disk(1, 1e-3)  # radius 1 with no alias blur: the centre and its four neighbours, 1/5 each
    assert np.allclose(plus[7:10, 7:10], [[0, 0.2, 0], [0.2, 0.2, 0.2], [0, 0.2, 0]], atol=1e-12)
    assert np.isclose(C.disk(1.5, 0.1).sum(), 1)


def test_defocus_blur_matches_a_pixel_loop_with_reflect_101_borders(images):
    kernel = C.disk(1.5, 0.1)
    x = images[:2] / 255.0
    padded = np.pad(x, ((0, 0), (8, 8), (8, 8), (0, 0)), mode="reflect")  # numpy "reflect" = OpenCV REFLECT_101
    slow = np.zeros_like(x)
    for i in range(32):
        for j in range(32):
            slow[:, i, j] = np.einsum("nhwc,hw->nc", padded[:, i : i + 17, j : j + 17], kernel)
    expected = np.uint8(np.clip(slow, 0, 1) * 255)
    got = C.defocus_blur(images[:2], (1.5, 0.1))
    assert np.abs(got.astype(int) - expected).max() <= 1 and (got == expected).mean() > 0.999


def test_zoom_matches_scipy():
    from scipy.ndimage import zoom

    x = np.random.default_rng(0).random((3, 32, 32, 3)).astype(np.float32)
    for z in np.arange(1, 1.26, 0.01):  # every zoom factor of zoom blur
        part = x[:, : int(np.ceil(32 / z)), : int(np.ceil(32 / z))]
        assert np.allclose(C.zoom_linear(part, z), zoom(part, (1, z, z, 1), order=1), atol=1e-5)


def test_glass_blur_matches_a_per_image_loop_with_the_same_draws(images):
    sigma, delta, iterations = 0.25, 1, 2
    x = images[:3]
    got = C.glass_blur(x, (sigma, delta, iterations), np.random.default_rng(5))
    rng = np.random.default_rng(5)
    draws = [rng.integers(-delta, delta, size=(2, 3)) for _ in range(iterations * 30 * 30)]
    out = []
    for n in range(3):
        y = C._out(C._gaussian(x[n : n + 1] / 255.0, sigma))[0]
        k = 0
        for _ in range(iterations):
            for h in range(31, 1, -1):
                for w in range(31, 1, -1):
                    dx, dy = draws[k][:, n]
                    k += 1
                    y[h, w] = y[h + dy, w + dx]
        out.append(C._out(C._gaussian(y[None] / 255.0, sigma))[0])
    assert np.array_equal(got, np.stack(out))


def test_brightness_matches_the_standard_hsv_per_pixel(images):
    x = images[:2]
    got = C.brightness(x, 0.2)
    expected = np.empty_like(x)
    for idx in np.ndindex(x.shape[:3]):
        h, s, v = colorsys.rgb_to_hsv(*(x[idx] / 255.0))
        expected[idx] = np.uint8(np.clip(colorsys.hsv_to_rgb(h, s, min(v + 0.2, 1.0)), 0, 1) * 255)
    assert np.abs(got.astype(int) - expected).max() <= 1 and (got == expected).mean() > 0.999


def test_contrast_pixelate_and_jpeg_follow_their_definitions(images):
    from PIL import Image

    x = images[:2]
    m = (x / 255.0).mean(axis=(1, 2), keepdims=True)
    assert np.array_equal(C.contrast(x, 0.4), np.uint8(np.clip((x / 255.0 - m) * 0.4 + m, 0, 1) * 255))
    small = Image.fromarray(x[0]).resize((24, 24), Image.BOX).resize((32, 32), Image.BOX)
    assert np.array_equal(C.pixelate(x, 0.75)[0], np.asarray(small))
    buf = io.BytesIO()
    Image.fromarray(x[1]).save(buf, "JPEG", quality=50)
    assert np.array_equal(C.jpeg_compression(x, 50)[1], np.asarray(Image.open(buf)))


def test_plasma_fractal_is_a_seeded_map_in_the_unit_interval():
    a = C.plasma_fractal(np.random.default_rng(0))
    assert a.shape == (32, 32) and a.min() == 0 and a.max() == 1
    assert np.array_equal(a, C.plasma_fractal(np.random.default_rng(0)))


# ---------------------------------------------------------------------------------------------- cifar10-jpeg
@pytest.mark.slow  # decodes and checks all 10,000 images: seconds
def test_cifar10_jpeg_is_the_whole_test_set_in_the_official_order():
    ds = datasets.load_dataset("cifar10-jpeg", "test")
    assert len(ds) == 10000 and ds.class_names == datasets.CIFAR10_CLASSES
    assert np.bincount(ds.labels).tolist() == [1000] * 10
    assert ds.labels[:8].tolist() == [3, 8, 8, 0, 6, 6, 1, 6]
    x, y = ds.dataset[0]
    assert tuple(x.shape) == (3, 32, 32) and x.dtype == torch.float32 and y == 3
    # the same images as the 846 exact ones, with JPEG loss (mean error 5.8/255): a shifted order would be far off
    jpeg, _, _ = datasets.cifar10_jpeg_arrays()
    exact, exact_labels, _ = datasets.cifar10_sample_arrays("test")
    assert np.array_equal(ds.labels[:846], exact_labels)
    err = np.abs(jpeg[:846].astype(float) - exact).mean()
    assert 3 < err < 10
    assert np.abs(jpeg[1:847].astype(float) - exact).mean() > 40
    with pytest.raises(ValueError, match="one split"):
        datasets.load_dataset("cifar10-jpeg", "train")
    assert datasets.requirements("cifar10-jpeg")[0].present
    sub = datasets.load_dataset("cifar10-jpeg", n_per_class=1000, seed=3)  # all of them, in order
    assert np.array_equal(sub.labels, ds.labels)


@pytest.fixture
def small_jpeg_file(tmp_path, monkeypatch):
    """A 200-image stand-in for data/cifar10_jpeg/ (20 per class), in place through KSTAR_SHIPPED_DATA."""
    x = np.random.default_rng(0).integers(0, 256, size=(200, 32, 32, 3), dtype=np.uint8)
    path = tmp_path / "cifar10_jpeg" / "cifar10_jpeg.npz"
    path.parent.mkdir()
    datasets.pack_images(path, {"test": (x, np.arange(200) % 10)}, datasets.CIFAR10_CLASSES, method=0)
    monkeypatch.setenv("KSTAR_SHIPPED_DATA", str(tmp_path))
    return x, path


def test_cifar10_jpeg_subsamples_per_class_reproducibly(small_jpeg_file):
    x, _ = small_jpeg_file
    a = datasets.load_dataset("cifar10-jpeg", n_per_class=5, seed=0)
    b = datasets.load_dataset("cifar10-jpeg", n_per_class=5, seed=0)
    c = datasets.load_dataset("cifar10-jpeg", n_per_class=5, seed=1)
    assert len(a) == 50 and np.bincount(a.labels).tolist() == [5] * 10
    assert np.array_equal(a.dataset.indices, b.dataset.indices)
    assert not np.array_equal(a.dataset.indices, c.dataset.indices)
    assert a.source["n_per_class"] == 5 and a.source["seed"] == 0
    i = int(a.dataset.indices[7])
    img, y = a.dataset[7]
    assert y == i % 10 and torch.equal(img, torch.from_numpy(x[i].transpose(2, 0, 1).astype(np.float32) / 255))
    assert len(datasets.load_dataset("cifar10-jpeg")) == 200


def test_a_damaged_jpeg_file_is_named(small_jpeg_file):
    from kstar_utils.io import cache

    x, path = small_jpeg_file
    assert np.array_equal(datasets.cifar10_jpeg_arrays()[0], x)
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}

    def rewrite(**changed):  # a new file (new time: the decoded copy of the old one is not reused)
        stat = path.stat()
        cache.write_npz(path, {**arrays, **changed})
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))

    raw = bytearray(path.read_bytes())  # one flipped byte inside the WebP stream
    raw[raw.find(arrays["test_webp"][200:232].tobytes()) + 16] ^= 0xFF
    path.write_bytes(bytes(raw))
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    with pytest.raises(ValueError, match="cifar10_jpeg.npz"):
        datasets.cifar10_jpeg_arrays()
    webp = arrays["test_webp"].copy()
    webp[:4] = np.frombuffer(b"XXXX", dtype=np.uint8)  # the first image is no longer an image
    rewrite(test_webp=webp)
    with pytest.raises(ValueError, match="cifar10_jpeg.npz.*'test' image 0 cannot be decoded"):
        datasets.cifar10_jpeg_arrays()
    rewrite(test_sha256=np.asarray("0" * 64))  # decodes, but not to the pixels the file vouches for
    with pytest.raises(ValueError, match="cifar10_jpeg.npz.*do not match their stored sha256"):
        datasets.cifar10_jpeg_arrays()
    path.unlink()
    with pytest.raises(datasets.DatasetNotFoundError, match="cifar10_jpeg.npz"):
        datasets.load_dataset("cifar10-jpeg")


# ---------------------------------------------------------------------------------------------- the axes
class _Constant(torch.nn.Module):
    """Predicts class `k` for every image."""

    def __init__(self, k: int):
        super().__init__()
        self.k = k

    def forward(self, x):
        out = torch.zeros(x.shape[0], 10)
        out[:, self.k] = 1
        return out


def test_clean_accuracy_takes_uint8_or_float_images(images):
    _, labels, _ = datasets.cifar10_sample_arrays("test")
    y = labels[:64]
    model = _Constant(3)
    expected = float(np.mean(y == 3))
    assert E.clean_accuracy(model, images, y) == expected
    assert E.clean_accuracy(model, E._chw(images), y) == expected


def test_corruption_accuracy_summarises_by_corruption_and_family(images):
    _, labels, _ = datasets.cifar10_sample_arrays("test")
    sets = E.corrupted_sets(images[:10], ("contrast", "gaussian_noise"), (1, 2))
    assert set(sets) == {("contrast", 1), ("contrast", 2), ("gaussian_noise", 1), ("gaussian_noise", 2)}
    out = E.corruption_accuracy(_Constant(6), sets, labels[:10])
    frac = float(np.mean(labels[:10] == 6))
    assert out == {"corruption_acc": frac, "corruption_acc_digital": frac, "corruption_acc_noise": frac,
                   "corr_contrast": frac, "corr_gaussian_noise": frac}


def test_settings_and_labels():
    assert E.eps_label(2 / 255) == "linf_2_255" and E.eps_label(8 / 255) == "linf_8_255"
    assert E.eps_label(0.01) == "linf_0.01"
    with pytest.raises(ValueError, match="pixel units"):
        E.EvaluationSettings(robust_eps=(8,))
    with pytest.raises(ValueError, match="unknown corruptions"):
        E.EvaluationSettings(corruptions=("snow",))
    with pytest.raises(ValueError, match="clean_n"):
        E.EvaluationSettings(clean_n=0)
    record = E.EvaluationSettings().record()
    assert json.loads(json.dumps(record)) == record and record["apgd_targets"] == 3


def test_the_default_models_are_the_thirty_of_the_study():
    names = E.default_models()
    assert len(names) == 30 and len(set(names)) == 30
    assert "cifar-resnet:resnet20-pgd8" in names and "convex:small-36px" in names


def test_describe_model_knows_every_kind():
    assert E.describe_model("abcrown:oval-wide") == {
        "source": "abcrown", "family": "cnn-a-wide", "training": "certified",
        "train_method": "provable training through a convex relaxation", "train_norm": "Linf", "train_eps": 2 / 255}
    assert E.describe_model("cifar-resnet:resnet56")["training"] == "standard"
    ft = E.describe_model("cifar-resnet:resnet20-pgd4")
    assert ft["training"] == "own-fine-tune" and ft["train_norm"] == "Linf" and ft["train_eps"] == 4 / 255
    assert E.describe_model("chenyaofo:resnet20")["family"] == E.describe_model("cifar-resnet:resnet20")["family"]


# ---------------------------------------------------------------------------------------------- the driver
@pytest.fixture
def fake_measure(monkeypatch):
    """The driver with instant measurements and settable weights tags: records which models it measured."""
    calls, tags = [], {}

    def tag(name, **options):
        return tags.get(name, f"{name}@v1")

    def measure_model(name, data, settings, *, progress=False):
        calls.append(name)
        return {"model": name, "weights": tag(name), "clean_acc": 0.5, "clean_n": 846, "jpeg_acc": 0.4,
                "jpeg_n": 10000, "robust_n": 500, **{f"robust_acc_{E.eps_label(e)}": 0.1 for e in settings.robust_eps},
                "corruption_acc": 0.3, "seconds_total": 1.0}

    monkeypatch.setattr("kstar_utils.models.model_pretrained_tag", tag)
    monkeypatch.setattr(E, "measure_model", measure_model)
    monkeypatch.setattr(E, "_build_data", lambda settings: None)
    return calls, tags


def test_the_driver_measures_then_resumes(fake_measure, tmp_path, capsys):
    calls, tags = fake_measure
    out = tmp_path / "acc.csv"
    names = ["abcrown:cnn-a-adv", "convex:small-8px"]
    df = E.measure_cifar_models(names, out, progress=False)
    assert calls == names and df["model"].tolist() == names
    assert set(df["settings_key"]) == {df["settings_key"][0]} and "pyautoattack" in json.loads(df["versions"][0])
    assert json.loads(df["settings"][0])["evaluation"]["robust_n"] == 500
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[0].startswith("abcrown:cnn-a-adv: clean 0.500")
    E.measure_cifar_models(names, out, progress=False)
    assert calls == names  # unchanged: nothing measured again
    assert "unchanged" in capsys.readouterr().out
    E.measure_cifar_models(names[:1], out, force=True, progress=False)
    assert calls == names + names[:1]
    tags["convex:small-8px"] = "convex:small-8px@v2"  # new weights: only that model again
    E.measure_cifar_models(names, out, progress=False)
    assert calls == names + names[:1] + ["convex:small-8px"]
    E.measure_cifar_models(names[:1], out, progress=False, settings=E.EvaluationSettings(robust_n=100))
    assert calls[-1] == "abcrown:cnn-a-adv"
    table = pd.read_csv(out)
    assert table["model"].tolist() == names  # the other model's row is kept
    assert table.set_index("model").loc["convex:small-8px", "weights"] == "convex:small-8px@v2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["acc.csv"]  # atomic writes leave no partial files


def test_the_driver_refuses_an_unknown_name_before_any_work(fake_measure, tmp_path):
    calls, _ = fake_measure
    with pytest.raises(ValueError, match="cnn-a-adv"):
        E.measure_cifar_models(["abcrown:cnn-a-adv", "abcrown:cnn-a-adw"], tmp_path / "a.csv")
    assert calls == [] and not (tmp_path / "a.csv").exists()


def test_the_driver_restores_torch_threads(fake_measure, tmp_path):
    before = torch.get_num_threads()
    E.measure_cifar_models(["abcrown:cnn-a-adv"], tmp_path / "a.csv", threads=1, progress=False)
    assert torch.get_num_threads() == before
    with pytest.raises(ValueError, match="threads"):
        E.measure_cifar_models(["abcrown:cnn-a-adv"], tmp_path / "a.csv", threads=0)


def test_kstar_zoo_measure_passes_its_options(monkeypatch, tmp_path):
    from kstar_utils import cli

    seen = {}
    monkeypatch.setattr(E, "measure_cifar_models", lambda names, out, **kw: seen.update(names=names, out=out, **kw))
    assert cli.main(["zoo", "measure", "--models", "abcrown:cnn-a-adv", "chenyaofo:resnet20", "--force",
                     "--out", str(tmp_path / "t.csv"), "--torch-threads", "1"]) == 0
    assert seen == {"names": ["abcrown:cnn-a-adv", "chenyaofo:resnet20"], "out": str(tmp_path / "t.csv"),
                    "force": True, "threads": 1}


def test_a_classifier_of_other_images_is_refused():
    with pytest.raises(ValueError, match="10 CIFAR-10 classes|CIFAR-10 images"):
        E._classifier("zoo:standard")


@pytest.mark.slow
def test_the_driver_measures_a_real_model_end_to_end(tmp_path):
    settings = E.EvaluationSettings(robust_n=20, clean_n=40, jpeg_per_class=3, corruptions=("contrast", "fog"),
                                    severities=(1, 5))
    df = E.measure_cifar_models(["abcrown:oval-deep"], tmp_path / "t.csv", settings=settings, progress=False,
                                threads=1)
    row = df.iloc[0]
    assert row["clean_n"] == 40 and row["jpeg_n"] == 30 and row["robust_n"] == 20
    assert row["weights"].startswith("abcrown:oval-deep@1ddec19e8e7c") and row["training"] == "certified"
    for col in ("clean_acc", "jpeg_acc", "robust_acc_linf_2_255", "robust_acc_linf_8_255", "corruption_acc",
                "corr_fog", "corr_contrast", "corruption_acc_weather"):
        assert 0 <= row[col] <= 1, col
    # AutoAttack starts from the correctly classified points and never adds any
    assert row["robust_acc_linf_8_255"] <= row["robust_acc_linf_2_255"] <= row["clean_acc_robust_subset"]
