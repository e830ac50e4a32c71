"""The real material shipped with the workbook: CIFAR-10 images and the pretrained / fine-tuned CIFAR ResNets."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from kstar_utils import datasets
from kstar_utils import models as registry
from kstar_utils.io.tables import load_measured_metrics
from kstar_utils.models import cifar_adapter, cifar_resnet, cifar_zoo
from kstar_utils.models.training import accuracy

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


@pytest.fixture(scope="module")
def test_images():
    return cifar_zoo.load_images("test")


def test_cifar10_sample_splits_labels_and_names():
    test = datasets.load_dataset("cifar10-sample", "test")
    train = datasets.load_dataset("cifar10-sample", "train")
    assert len(test) == 846 and len(train) == 4660
    assert test.class_names == CLASSES
    assert np.bincount(test.labels).tolist() == [83, 70, 88, 84, 76, 79, 97, 87, 88, 94]
    # the well-known start of the official test set and of data_batch_1
    assert [CLASSES[i] for i in test.labels[:8]] == ["cat", "ship", "ship", "airplane", "frog", "frog", "automobile",
                                                     "frog"]
    assert train.labels[:10].tolist() == [6, 9, 9, 4, 1, 1, 2, 7, 8, 3]
    x, y = test.dataset[0]
    assert tuple(x.shape) == (3, 32, 32) and 0 <= float(x.min()) and float(x.max()) <= 1 and y == 3
    with pytest.raises(ValueError, match="'test'.*'train'"):
        datasets.load_dataset("cifar10-sample", "val")


def test_a_damaged_image_file_is_named(tmp_path, monkeypatch):
    src = datasets.cifar10_sample_file()
    bad = tmp_path / "cifar10_sample" / "cifar10_sample.npz"
    bad.parent.mkdir()
    raw = bytearray(src.read_bytes())
    with np.load(src) as z:  # flip one byte inside the test split's WebP stream
        start = raw.find(z["test_webp"][1000:1032].tobytes())
    raw[start + 16] ^= 0xFF
    bad.write_bytes(bytes(raw))
    monkeypatch.setenv("KSTAR_SHIPPED_DATA", str(tmp_path))
    with pytest.raises(ValueError, match="cifar10_sample.npz"):
        datasets.cifar10_sample_arrays("test")


# resnet20 in the fast tier, the sweep over the deeper ones with the slow tests
@pytest.mark.parametrize("name", ["resnet20", *(pytest.param(n, marks=pytest.mark.slow)
                                                for n in ("resnet32", "resnet44", "resnet56"))])
def test_pretrained_weights_classify_the_real_test_images(name, test_images):
    X, y = test_images
    model = registry.load_model(f"cifar-resnet:{name}").module
    assert accuracy(model, X, y) > 0.90  # loaded wrong (architecture or preprocessing), these score ~0.10


@pytest.mark.slow
def test_finetuned_weights_reproduce_their_measured_clean_accuracy(test_images):
    X, y = test_images
    table = load_measured_metrics("cifar-resnet").set_index("model")
    assert set(table.index) == {f"cifar-resnet:{n}" for n in cifar_adapter.known_names()}
    for name in cifar_adapter.known_names():
        acc = accuracy(registry.load_model(f"cifar-resnet:{name}").module, X, y)
        assert acc == pytest.approx(table.loc[f"cifar-resnet:{name}", "clean_acc"], abs=1.5e-3), name
    pgd = table[table["kind"] == "pgd"].sort_values("train_eps")
    assert pgd["robust_acc"].iloc[-1] > table.loc["cifar-resnet:resnet20-ft", "robust_acc"] + 0.1
    assert ((table["robust_acc"] >= 0) & (table["robust_acc"] <= table["clean_acc"] + 0.05)).all()


def test_registry_features_equal_an_explicit_forward_pass(tmp_path, test_images):
    """Every layer read through hooks equals the same quantity computed by hand from the module's parts."""
    from kstar_utils.pipeline.features import extract_features, load_features

    layers = ("layer1", "layer2", "layer3", "penultimate", "logits")
    paths = extract_features("cifar-resnet:resnet20", "cifar10-sample", layers=layers, root=tmp_path, progress=False,
                             batch_size=200)
    m = cifar_resnet.load_pretrained("resnet20")
    X, y = test_images
    with torch.no_grad():
        x = torch.from_numpy(X)
        h0 = F.relu(m.bn1(m.conv1((x - m.mean) / m.std)))
        h1 = m.layer1(h0)
        h2 = m.layer2(h1)
        h3 = m.layer3(h2)
        pen = h3.mean(dim=(2, 3))
        expected = {"layer1": h1.mean(dim=(2, 3)), "layer2": h2.mean(dim=(2, 3)), "layer3": pen, "penultimate": pen,
                    "logits": m.linear(pen)}
    for layer in layers:
        fs = load_features(paths[layer])
        assert np.array_equal(fs.labels, y)
        assert fs.features.shape == (846, expected[layer].shape[1])
        np.testing.assert_allclose(fs.features, expected[layer].numpy(), rtol=1e-5, atol=1e-5, err_msg=layer)
        assert fs.class_names == CLASSES


def test_names_files_and_errors(tmp_path):
    assert registry.check_model_name("cifar-resnet:resnet20-pgd8")
    with pytest.raises(ValueError, match="resnet20"):
        registry.check_model_name("cifar-resnet:resnet21")
    with pytest.raises(registry.WeightsNotFoundError, match="resnet56"):
        registry.load_model("cifar-resnet:resnet56", weights_dir=tmp_path)
    wrong = tmp_path / cifar_resnet.PRETRAINED["resnet20"][0]
    wrong.write_bytes(cifar_resnet.weights_file("resnet32").read_bytes())  # a ResNet-32 under ResNet-20's name
    with pytest.raises(registry.CorruptWeightsError, match="does not match"):
        registry.load_model("cifar-resnet:resnet20", weights_dir=tmp_path)
    loaded = registry.load_model("cifar-resnet:resnet20")
    assert loaded.check_layers(("layer1", "layer2", "layer3", "penultimate", "logits"))
    with pytest.raises(ValueError, match="closest"):
        loaded.check_layers(("layer4",))
    assert loaded.pretrained.startswith("cifar-resnet:resnet20@12fca82f0beb")


def test_saved_state_round_trips_in_the_upstream_layout(tmp_path):
    m = cifar_resnet.load_pretrained("resnet20")
    path = cifar_resnet.save_state(m, tmp_path / "copy.th", recipe="test")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    assert all(k.startswith("module.") for k in ckpt["state_dict"]) and ckpt["recipe"] == "test"
    m2 = cifar_resnet.build("resnet20")
    cifar_resnet.load_state(m2, path)
    for a, b in zip(m.state_dict().values(), m2.state_dict().values()):
        assert torch.equal(a, b)


def test_pretrained_download_checks_the_upstream_hash(tmp_path, monkeypatch):
    seen = {}

    def fake_download(url, dst, hash_prefix=None, progress=True):
        seen.update(url=url, hash_prefix=hash_prefix)
        raise RuntimeError('invalid hash value (expected "12fca82f", got "00000000")')  # torch's own check failing

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    with pytest.raises(RuntimeError, match="invalid hash"):
        registry.load_model("cifar-resnet:resnet20", weights_dir=tmp_path, allow_download=True)
    assert seen == {"url": cifar_resnet.UPSTREAM_URL.format(file="resnet20-12fca82f.th"), "hash_prefix": "12fca82f"}


def test_finetuning_is_seeded_and_augmentation_keeps_the_images():
    X, y = cifar_zoo.load_images("train")
    r = cifar_zoo.Recipe("tiny", "clean", base="resnet20", epochs=1, batch_size=32)
    a = cifar_zoo.finetune(r, X[:64], y[:64], progress=False)
    b = cifar_zoo.finetune(r, X[:64], y[:64], progress=False)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
    x = torch.from_numpy(X[:64])
    out = cifar_zoo._augment(x, torch.Generator().manual_seed(0))
    assert out.shape == (64, 3, 32, 32)
    # every output is a 32 x 32 window of its zero-padded image, flipped or not, and both kinds occur
    padded = F.pad(x, (4, 4, 4, 4))
    kinds = set()
    for i in range(64):
        windows = padded[i].unfold(1, 32, 1).unfold(2, 32, 1)  # (3, 9, 9, 32, 32): every crop position
        for flipped, img in ((False, out[i]), (True, out[i].flip(2))):
            if (windows == img[:, None, None]).flatten(3).all(3).all(0).any():
                kinds.add(flipped)
                break
        else:
            raise AssertionError(f"augmented image {i} is not a crop of its padded image")
    assert kinds == {False, True}
    sub = cifar_zoo.eval_subset(cifar_zoo.load_images("test")[1])
    assert sub.size == cifar_zoo.EVAL_N and np.array_equal(sub, np.sort(sub))
