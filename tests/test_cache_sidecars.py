"""Sidecars and concurrent readers: a reader that looks while a cached file is being written or replaced never sets
a good file aside; any malformed sidecar is set aside with its file, which is rebuilt."""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest

from kstar_utils.io import cache
from kstar_utils.pipeline import stages
from kstar_utils.pipeline.features import extract_features
from study_jobs import finish_job


def _set_aside(path) -> list[Path]:
    path = Path(path)
    return sorted(path.parent.glob(path.name + cache.CORRUPT_INFIX + "*"))


def _write(path: Path, payload: bytes, **extra) -> dict:
    return cache.write_artifact(path, lambda tmp: tmp.write_bytes(payload), {"spec": {"kind": "t"}, **extra})


def _age(path: Path, seconds: float) -> None:
    """Make a file look written `seconds` ago (as an existing cached file is, when a later run replaces it)."""
    t = path.stat().st_mtime - seconds
    os.utime(path, (t, t))


@pytest.fixture
def readers_during_the_write(monkeypatch):
    """Runs a concurrent reader (verified_sidecar of the file being written) just before and just after
    write_artifact writes the sidecar, i.e. at every step of the write at which another process could look.
    Returns the list of what each reader got; a CorruptCacheWarning fails the test."""
    seen = []
    real = cache.write_json_atomic

    def hooked(path, obj):
        target = Path(str(path)[: -len(cache.SIDECAR_SUFFIX)])
        seen.append(("before sidecar", cache.verified_sidecar(target)))
        out = real(path, obj)
        seen.append(("after sidecar", cache.verified_sidecar(target)))
        return out

    monkeypatch.setattr(cache, "write_json_atomic", hooked)
    with warnings.catch_warnings():
        warnings.simplefilter("error", cache.CorruptCacheWarning)
        yield seen


# ---------------------------------------------------------------------------------------------- the write race
def test_a_reader_during_the_first_write_sees_nothing_and_sets_nothing_aside(tmp_path, readers_during_the_write):
    path = tmp_path / "a.bin"
    meta = _write(path, b"fresh and good")
    # the file is not visible until its sidecar is there: the readers found nothing to reuse, and nothing to damage
    assert readers_during_the_write == [("before sidecar", None), ("after sidecar", None)]
    assert cache.verified_sidecar(path) == meta and path.read_bytes() == b"fresh and good"
    assert not _set_aside(path) and not _set_aside(cache.sidecar_path(path))


def test_a_reader_while_a_file_is_replaced_sets_nothing_aside(tmp_path, readers_during_the_write):
    path = tmp_path / "a.bin"
    with warnings.catch_warnings():
        old = _write(path, b"old content")
    _age(path, 3600)
    _age(cache.sidecar_path(path), 3600)
    readers_during_the_write.clear()
    new = _write(path, b"new content")
    (_, first), (_, second) = readers_during_the_write
    assert first == old  # the old pair, still consistent
    assert second is None  # the new sidecar beside the old file: a replacement in progress, not damage
    assert cache.verified_sidecar(path) == new and path.read_bytes() == b"new content"
    assert not _set_aside(path) and not _set_aside(cache.sidecar_path(path))


def test_an_interrupted_replacement_is_rebuilt_without_a_warning(tmp_path):
    # killed between the new sidecar and the rename: the old file stays beside a newer sidecar that it does not match
    path = tmp_path / "a.bin"
    _write(path, b"old content")
    _age(path, 3600)
    cache.write_json_atomic(cache.sidecar_path(path), {"sha256": cache.spec_hash({"x": 1}, length=64)})
    with warnings.catch_warnings():
        warnings.simplefilter("error", cache.CorruptCacheWarning)
        assert cache.verified_sidecar(path) is None
    assert not _set_aside(path)


def test_a_file_damaged_after_its_sidecar_is_still_set_aside(tmp_path):
    path = tmp_path / "a.bin"
    _write(path, b"good content")
    _age(cache.sidecar_path(path), 60)
    path.write_bytes(b"damaged")
    with pytest.warns(cache.CorruptCacheWarning, match="differs from the sha256"):
        assert cache.verified_sidecar(path) is None
    assert len(_set_aside(path)) == 1 and len(_set_aside(cache.sidecar_path(path))) == 1


# ---------------------------------------------------------------------------------------------- malformed sidecars
MALFORMED = {
    "inputs a string": {"inputs": "weights.pt"},
    "inputs a list": {"inputs": [{"path": "w.pt", "sha256": "0" * 64}]},
    "inputs an int": {"inputs": 3},
    "an input a string": {"inputs": {"source": "w.pt"}},
    "an input without its sha256": {"inputs": {"source": {"path": "w.pt"}}},
    "an input's path a number": {"inputs": {"source": {"path": 7, "sha256": "0" * 64}}},
    "sha256 an int": {"sha256": 12},
    "sha256 a list": {"sha256": ["0" * 64]},
    "spec a string": {"spec": "features"},
}


@pytest.fixture
def byo(tmp_path):
    """A bring-your-own features file imported into a cache: (source file, cached features path, cache root)."""
    rng = np.random.default_rng(0)
    src = tmp_path / "given.npz"
    np.savez(src, features=rng.normal(size=(30, 4)).astype(np.float32), labels=np.repeat(np.arange(3), 10))
    root = tmp_path / "cache"
    return src, extract_features("none", f"features:{src}", root=root)["features"], root


def _spoil(path: Path, change: dict) -> None:
    side = cache.sidecar_path(path)
    side.write_text(json.dumps({**json.loads(side.read_text()), **change}))


@pytest.mark.parametrize("change", MALFORMED.values(), ids=MALFORMED.keys())
def test_a_malformed_sidecar_is_set_aside_and_the_file_rebuilt(byo, change):
    src, path, root = byo
    good = path.read_bytes()
    _spoil(path, change)
    with pytest.raises(cache.CorruptFileError, match="not a valid sidecar"):
        cache.read_sidecar(path)
    with pytest.warns(cache.CorruptCacheWarning, match="not a valid sidecar"):
        assert extract_features("none", f"features:{src}", root=root)["features"] == path
    assert path.read_bytes() == good and cache.read_sidecar(path)["sha256"] == cache.sha256_file(path)
    assert len(_set_aside(path)) == 1 and len(_set_aside(cache.sidecar_path(path))) == 1


@pytest.mark.parametrize("change", MALFORMED.values(), ids=MALFORMED.keys())
def test_verified_sidecar_sets_a_malformed_sidecar_aside(byo, change):
    src, path, _ = byo
    _spoil(path, change)
    with pytest.warns(cache.CorruptCacheWarning, match="not a valid sidecar"):
        assert cache.verified_sidecar(path, {"source": cache.sha256_file(src)}) is None
    assert len(_set_aside(path)) == 1


@pytest.mark.parametrize("inputs", ["w.pt", ["w.pt"], 3, {"weights": "w.pt"}, {"weights": {"path": "w.pt"}},
                                    {"weights": {"path": "w.pt", "sha256": 5}}])
def test_changed_inputs_counts_a_record_it_cannot_check_as_changed(inputs):
    (changed,) = cache.changed_inputs({"inputs": inputs}, missing_ok=True)
    assert changed.startswith("inputs") and "malformed" in changed


def test_kstar_of_features_whose_sidecar_is_malformed_names_the_file(tmp_path, byo):
    _, path, _ = byo
    _spoil(path, {"spec": "features"})
    with pytest.raises(ValueError, match=str(cache.sidecar_path(path))):
        stages.kstar_of_file(path, tmp_path / "out")


@pytest.fixture
def finished_job(tmp_path):
    """A finished study job on a features file (tables and done.json as run_job writes them, without papermill; the
    model is not loaded for a features: dataset)."""
    rng = np.random.default_rng(1)
    src = tmp_path / "given.npz"
    np.savez(src, features=rng.normal(size=(30, 4)).astype(np.float32), labels=np.repeat(np.arange(3), 10))
    job, _, kidx = finish_job(tmp_path, f"features:{src}", "features")
    return job, Path(kidx["features_path"][0])


@pytest.mark.parametrize("inputs", ["w.pt", [1, 2], 3])
def test_a_job_whose_features_sidecar_is_malformed_runs_again(finished_job, inputs):
    from kstar_utils.study.jobs import is_finished

    job, features = finished_job
    assert is_finished(job)
    _spoil(features, {"inputs": inputs})
    assert not is_finished(job)
    with pytest.warns(cache.CorruptCacheWarning, match="not a valid sidecar"):
        stages.extract_stage([job.model], job.dataset, layers=list(job.layers), root=job.cache_dir, progress=False)
    assert is_finished(job)
