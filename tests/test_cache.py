"""Content-keyed, self-healing caches: damaged cached files are set aside and rebuilt, derived results follow their
inputs' content, damaged user inputs are errors naming the file, and written files honour the umask."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import kstar_utils.pipeline.features as features_module

from kstar_utils.io import cache

from kstar_utils import compute_kstar

from kstar_utils.io import index
from kstar_utils.pipeline import stages
from kstar_utils.pipeline.features import extract_features, load_features, save_features
from study_jobs import finish_job


def _sha(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _set_aside(path) -> list[Path]:
    path = Path(path)
    return sorted(path.parent.glob(path.name + cache.CORRUPT_INFIX + "*"))


def _features(seed: int, n_per_class: int = 12, d: int = 5):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(3 * n_per_class, d)).astype(np.float32)
    y = np.repeat(np.arange(3), n_per_class)
    return X, y


def _save(path, seed: int) -> Path:
    X, y = _features(seed)
    spec = {"kind": "features", "model": "m", "dataset": "d", "split": "test", "layer": "l"}
    return save_features(path, X, y, ["a", "b", "c"], cache.provenance(spec, n=len(y), d=X.shape[1]))


@pytest.fixture
def byo(tmp_path):
    """A bring-your-own features file imported into a cache: (source .npz, cached features path, cache root)."""
    X, y = _features(0)
    src = tmp_path / "given.npz"
    np.savez(src, features=X, labels=y)
    root = tmp_path / "cache"
    return src, extract_features("none", f"features:{src}", root=root)["features"], root


@pytest.fixture
def zoo_root(tmp_path):
    from kstar_utils.models import digits_zoo as zoo

    if not zoo.weights_path("standard").exists():
        pytest.skip("zoo weights not built (make zoo)")
    return tmp_path / "zoo_cache"


def _extract_logits(root) -> Path:
    return extract_features("zoo:standard", "digits", layers=["logits"], root=root, progress=False)["logits"]


# ---------------------------------------------------------------------------------------------- hashing, npz
def test_one_sha256_file_and_reproducible_npz(tmp_path):
    from kstar_utils.models._common import sha256_file

    assert sha256_file is cache.sha256_file
    a, b = tmp_path / "a.npz", tmp_path / "b.npz"
    arrays = {"x": np.arange(6.0).reshape(2, 3), "names": np.asarray(["p", "q"])}
    cache.write_npz(a, arrays)
    cache.write_npz(b, {k: v.copy() for k, v in arrays.items()})
    assert a.read_bytes() == b.read_bytes() and cache.sha256_file(a) == _sha(a)
    np.testing.assert_array_equal(cache.load_npz(a, ["x"])["x"], arrays["x"])


def test_sidecar_records_the_files_own_sha256(byo):
    src, path, _ = byo
    meta = cache.read_sidecar(path)
    assert meta["sha256"] == _sha(path)
    assert meta["inputs"]["source"] == {"path": str(src.resolve()), "sha256": _sha(src)}


# ---------------------------------------------------------------------------------------------- damaged cache files
@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_damaged_cached_features_are_set_aside_and_rebuilt(byo, damage):
    src, path, root = byo
    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 2] if damage == "truncated" else os.urandom(len(good)))
    with pytest.warns(cache.CorruptCacheWarning, match=str(path)):
        again = extract_features("none", f"features:{src}", root=root)["features"]
    assert again == path and path.read_bytes() == good  # byte-reproducible rebuild
    assert len(_set_aside(path)) == 1 and len(_set_aside(cache.sidecar_path(path))) == 1


@pytest.mark.parametrize("damage", ["missing", "garbage"])
def test_missing_or_garbage_sidecar_is_set_aside_and_rebuilt(byo, damage):
    src, path, root = byo
    side = cache.sidecar_path(path)
    if damage == "missing":
        side.unlink()
        reason = "no provenance sidecar"
    else:
        side.write_bytes(b"{\"spec\": {\"kind\": \"feat")
        reason = "sidecar is unreadable"
    with pytest.warns(cache.CorruptCacheWarning, match=reason):
        extract_features("none", f"features:{src}", root=root)
    assert cache.read_sidecar(path)["sha256"] == _sha(path)
    assert len(_set_aside(path)) == 1
    assert len(_set_aside(side)) == (1 if damage == "garbage" else 0)


def test_reuse_when_intact_needs_no_rewrite(byo):
    src, path, root = byo
    before = path.stat().st_mtime_ns
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert extract_features("none", f"features:{src}", root=root)["features"] == path
    assert path.stat().st_mtime_ns == before


def test_extracted_features_damage_and_legacy_sidecars(zoo_root):
    path = _extract_logits(zoo_root)
    good, side = path.read_bytes(), cache.sidecar_path(path)
    assert cache.read_sidecar(path)["inputs"]["weights"]["sha256"] == cache.read_sidecar(path)["weights_sha256"]

    path.write_bytes(good[:100])
    with pytest.warns(cache.CorruptCacheWarning, match="differs from the sha256"):
        assert _extract_logits(zoo_root) == path
    assert path.read_bytes() == good

    # a sidecar from before files carried their hash: an intact file is checked and adopted, not re-extracted
    meta = cache.read_sidecar(path)
    legacy = {k: v for k, v in meta.items() if k not in ("sha256", "inputs")}
    side.write_text(json.dumps(legacy))
    before = path.stat().st_mtime_ns
    _extract_logits(zoo_root)
    assert path.stat().st_mtime_ns == before and cache.read_sidecar(path)["sha256"] == _sha(path)
    # ... and a damaged one is set aside
    side.write_text(json.dumps(legacy))
    path.write_bytes(good[:-50])
    with pytest.warns(cache.CorruptCacheWarning, match="not a readable .npz"):
        _extract_logits(zoo_root)
    assert path.read_bytes() == good


def test_features_follow_the_recorded_weights_content(zoo_root):
    path = _extract_logits(zoo_root)
    side = cache.sidecar_path(path)
    meta = cache.read_sidecar(path)
    meta["inputs"]["weights"]["sha256"] = "0" * 64  # as if the weights file had new content since
    side.write_text(json.dumps(meta))
    with warnings.catch_warnings():
        warnings.simplefilter("error", cache.CorruptCacheWarning)  # stale is not damage: no warning, no set-aside
        _extract_logits(zoo_root)
    assert cache.read_sidecar(path)["inputs"]["weights"]["sha256"] == meta["weights_sha256"]
    assert not _set_aside(path)


def test_resumed_chunk_that_is_damaged_is_recomputed(zoo_root):
    opts = dict(layers=["logits"], progress=False, batch_size=128, chunk_batches=1)
    ref = extract_features("zoo:standard", "digits", root=zoo_root / "ref", **opts)["logits"]

    class Killed(RuntimeError):
        pass

    def kill(i, n):
        if i == 2:
            raise Killed

    with pytest.raises(Killed), pytest.MonkeyPatch.context() as mp:
        mp.setattr(features_module, "_chunk_saved", kill)
        extract_features("zoo:standard", "digits", root=zoo_root / "run", **opts)
    chunk = sorted((zoo_root / "run" / "features_parts").glob("*/chunk_000001.npz"))[0]
    chunk.write_bytes(b"not a zip")
    with pytest.warns(cache.CorruptCacheWarning, match="chunk_000001.npz"):
        out = extract_features("zoo:standard", "digits", root=zoo_root / "run", **opts)["logits"]
    assert out.read_bytes() == ref.read_bytes()


# ---------------------------------------------------------------------------------------------- k*
def test_kstar_follows_the_features_content(tmp_path):
    features = _save(tmp_path / "f.npz", seed=0)
    k1 = stages.kstar_of_file(features, tmp_path / "out")
    assert cache.read_sidecar(k1)["inputs"]["features"]["sha256"] == _sha(features)

    _save(features, seed=1)  # the cached features rebuilt with new content under the same name
    k2 = stages.kstar_of_file(features, tmp_path / "out")
    assert k2 != k1
    X, y = _features(1)
    np.testing.assert_array_equal(index.load_kstar(k2).kstar, compute_kstar(X, y))

    # new bytes under an old sidecar: still the k* of the bytes, with a warning that the sidecar does not describe them
    other = _save(tmp_path / "g.npz", seed=2)
    features.write_bytes(other.read_bytes())
    with pytest.warns(UserWarning, match="not the file its sidecar describes"):
        k3 = stages.kstar_of_file(features, tmp_path / "out")
    assert k3 not in (k1, k2)
    np.testing.assert_array_equal(index.load_kstar(k3).kstar, compute_kstar(*_features(2)))


def test_truncated_kstar_is_recomputed_with_a_warning(tmp_path):
    features = _save(tmp_path / "f.npz", seed=0)
    path = stages.kstar_of_file(features, tmp_path / "out")
    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 3])
    with pytest.warns(cache.CorruptCacheWarning, match=str(path)):
        assert stages.kstar_of_file(features, tmp_path / "out") == path
    assert path.read_bytes() == good and len(_set_aside(path)) == 1


def test_load_kstar_rejects_a_file_the_index_does_not_record(tmp_path):
    features = _save(tmp_path / "f.npz", seed=0)
    kidx = stages.kstar_stage(pd.DataFrame([{"model": "m", "dataset": "d", "split": "test", "layer": "l",
                                             "features_path": str(features)}]), root=tmp_path / "out", progress=False)
    assert kidx["kstar_sha256"].iloc[0] == _sha(kidx["kstar_path"].iloc[0])
    assert kidx["features_sha256"].iloc[0] == _sha(features)
    models, _ = stages.skewness_stage(kidx)
    assert models["kstar_sha256"].iloc[0] == kidx["kstar_sha256"].iloc[0]
    with pytest.raises(ValueError, match="not the file the k\\* index records"):
        stages.skewness_stage(kidx.assign(kstar_sha256="f" * 64))


# ---------------------------------------------------------------------------------------------- user inputs
def test_garbage_index_csv_is_a_value_error_naming_it(tmp_path):
    bad = tmp_path / "features_index.csv"
    bad.write_bytes(os.urandom(300))
    with pytest.raises(ValueError, match=str(bad)):
        stages.kstar_stage(bad, root=tmp_path)
    bad.write_text("this is not,an index\n1,2\n")
    with pytest.raises(ValueError, match=str(bad)):
        stages.kstar_stage(bad, root=tmp_path)
    assert bad.exists()  # the user's file is never moved


def test_garbage_features_in_a_user_index_is_a_value_error_naming_it(tmp_path):
    features = _save(tmp_path / "mine.npz", seed=0)
    features.write_bytes(features.read_bytes()[:40])
    index = tmp_path / "index.csv"
    pd.DataFrame([{"model": "m", "dataset": "d", "split": "test", "layer": "l",
                   "features_path": str(features)}]).to_csv(index, index=False)
    with pytest.raises(ValueError, match=str(features)):
        stages.kstar_stage(index, root=tmp_path / "out", progress=False)
    assert features.exists() and not _set_aside(features)


def test_corrupt_bring_your_own_file_is_a_value_error_naming_it(tmp_path):
    src = tmp_path / "mine.npz"
    src.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(ValueError, match=str(src)):
        extract_features("none", f"features:{src}", root=tmp_path / "cache")
    src.write_bytes(os.urandom(64))
    with pytest.raises(ValueError, match=str(src)):
        extract_features("none", f"features:{src}", root=tmp_path / "cache")
    assert src.exists()


def test_load_features_names_an_unreadable_file(tmp_path):
    path = _save(tmp_path / "f.npz", seed=0)
    cache.sidecar_path(path).write_text("[1, 2")
    with pytest.raises(ValueError, match="f.npz.json"):
        load_features(path)


# ---------------------------------------------------------------------------------------------- file modes
@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_honour_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        assert cache.current_umask() == umask
        written = [cache.write_json_atomic(tmp_path / "a.json", {"x": 1}),
                   index.write_table(pd.DataFrame({"x": [1]}), tmp_path / "t.csv"),
                   _save(tmp_path / "f.npz", seed=0)]
        written += [cache.sidecar_path(written[-1]), stages.kstar_of_file(written[-1], tmp_path / "out")]
        written.append(cache.sidecar_path(written[-1]))
    finally:
        os.umask(old)
    assert {p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in written} == {p.name: oct(mode) for p in written}


# ---------------------------------------------------------------------------------------------- study jobs
@pytest.fixture
def finished_job(tmp_path, zoo_root):
    """A study job on digits whose tables and done.json are written as run_job writes them (without papermill)."""
    return finish_job(tmp_path, "digits", "logits")


def test_done_json_records_tables_and_inputs(finished_job):
    from kstar_utils.study.jobs import is_finished

    job, done, kidx = finished_job
    assert set(done["outputs"]) == set(done["tables"].values())
    assert done["inputs"] == {kidx["features_path"][0]: _sha(kidx["features_path"][0]),
                              kidx["kstar_path"][0]: _sha(kidx["kstar_path"][0])}
    assert is_finished(job)


def test_job_with_rebuilt_features_runs_again(finished_job):
    from kstar_utils.study.jobs import is_finished

    job, _, kidx = finished_job
    features = Path(kidx["features_path"][0])
    fs = load_features(features)
    save_features(features, fs.features + 1.0, fs.labels, fs.class_names, fs.meta)
    assert not is_finished(job)


def test_damaged_done_json_or_table_is_set_aside(finished_job):
    from kstar_utils.study.jobs import is_finished, job_paths

    job, done, _ = finished_job
    table = Path(done["tables"]["skewness_table"])
    table.write_text(table.read_text().replace("logits", "penultimate"))
    with pytest.warns(cache.CorruptCacheWarning, match=str(table)):
        assert not is_finished(job)
    assert len(_set_aside(table)) == 1

    done_path = job_paths(job)["done"]
    done_path.write_text('{"spec_hash": ')
    with pytest.warns(cache.CorruptCacheWarning, match="done.json"):
        assert not is_finished(job)
    assert len(_set_aside(done_path)) == 1


def test_done_json_without_content_record_is_not_finished(finished_job):
    from kstar_utils.study.jobs import is_finished, job_paths

    job, done, _ = finished_job
    cache.write_json_atomic(job_paths(job)["done"], {k: v for k, v in done.items() if k not in ("inputs", "outputs")})
    assert not is_finished(job)


def test_summary_rows_come_only_from_the_recorded_tables(finished_job):
    from kstar_utils.study.summary import job_rows

    job, done, kidx = finished_job
    rows = job_rows(job, {"status": "skipped", "done": done})
    assert rows["status"].tolist() == ["skipped"] and rows["approx_skewness"].notna().all()
    assert rows["kstar_sha256"][0] == _sha(kidx["kstar_path"][0])
    assert rows["features_sha256"][0] == _sha(kidx["features_path"][0])

    table = Path(done["tables"]["skewness_table"])
    stale = pd.read_csv(table).assign(approx_skewness=0.0)
    stale.to_csv(table, index=False)
    with pytest.warns(cache.CorruptCacheWarning, match=str(table)), pytest.warns(UserWarning, match="stale or damaged"):
        rows = job_rows(job, {"status": "skipped", "done": done})
    assert rows["status"].tolist() == ["failed"] and str(table) in rows["error"][0]
    assert "approx_skewness" not in rows.columns or rows["approx_skewness"].isna().all()


def test_content_digest_of_a_file_and_of_a_folder(tmp_path):
    f = tmp_path / "a.bin"
    f.write_bytes(b"abc")
    assert cache.content_digest(f) == cache.sha256_file(f)
    folder = tmp_path / "images"
    (folder / "cat").mkdir(parents=True)
    (folder / "cat" / "1.png").write_bytes(b"one")
    first = cache.content_digest(folder)
    assert cache.content_digest(folder) == first  # stable
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)  # copies times too
    assert cache.content_digest(copy) == first
    (folder / "cat" / "2.png").write_bytes(b"two")
    added = cache.content_digest(folder)
    assert added != first
    os.utime(folder / "cat" / "1.png", ns=(1, 1))  # replaced in place: the same name and size, a new time
    assert cache.content_digest(folder) != added
    record = {"inputs": {"data": cache.input_record(folder, added)}}
    assert cache.changed_inputs(record) == [str(folder)]
