"""A study file is checked whole before anything runs: one line, exit status 2, naming the problem."""
from pathlib import Path

import pytest
import yaml

from kstar_utils import cli
from kstar_utils.study import expand_jobs, load_study
from kstar_utils.study.jobs import notebook_parameters


def _study(folder: Path, name: str = "tiny.yaml", **extra) -> Path:
    study = {"name": "tiny", "models": ["zoo:standard"], "datasets": ["digits"], "layers": ["penultimate"],
             "output_dir": "out", "cache_dir": "cache", **extra}
    path = folder / name
    path.write_text(yaml.safe_dump(study))
    return path


def _plan_error(path, capsys) -> str:
    code = cli.main(["plan", str(path)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("kstar: error: ") and err.count("\n") == 1, err
    return err


def test_one_pair_in_two_blocks_with_different_options_is_refused(tmp_path, capsys):
    grids = [{"models": ["zoo:standard"], "datasets": ["digits"], "extract_options": {"n_per_class": 20}},
             {"models": ["zoo:standard", "zoo:untrained"], "datasets": ["digits"],
              "extract_options": {"n_per_class": 30}}]
    path = tmp_path / "grids.yaml"
    path.write_text(yaml.safe_dump({"name": "tiny", "grids": grids, "output_dir": "out", "cache_dir": "cache"}))
    err = _plan_error(path, capsys)
    assert "zoo:standard on digits is in grids[0] and grids[1] with different extract_options (n_per_class: 20 vs 30)" \
        in err
    # the same options in both blocks: one job with the union of the layers
    grids[1]["extract_options"] = {"n_per_class": 20}
    grids[1]["layers"] = ["logits"]
    path.write_text(yaml.safe_dump({"name": "tiny", "grids": grids, "output_dir": "out", "cache_dir": "cache",
                                    "layers": ["penultimate"]}))
    jobs = {j.model: j for j in expand_jobs(load_study(path))}
    assert jobs["zoo:standard"].layers == ("penultimate", "logits") and len(jobs) == 2


@pytest.mark.parametrize("options, message", [
    ({"pool": "bogus"}, "extract_options: pool must be one of ['avg', 'flatten', 'cls']; got 'bogus'"),
    ({"n_per_class": "abc"}, "extract_options: n_per_class must be a whole number >= 1, or null"),
    ({"batch_size": 0}, "extract_options: batch_size must be a whole number >= 1; got 0"),
    ({"amp": "yes please"}, "extract_options: amp must be true or false"),
    ({"n_per_klass": 3}, "extract_options: unknown option 'n_per_klass'; did you mean ['n_per_class']"),
    ({"device": "cuda"}, "the device is the study's own key 'device'"),
])
def test_every_option_value_is_checked_at_plan_time(tmp_path, capsys, options, message):
    assert message in _plan_error(_study(tmp_path, extract_options=options), capsys)


def test_relative_paths_mean_the_study_files_folder_from_anywhere(tmp_path, monkeypatch):
    folder = tmp_path / "studies"
    folder.mkdir()
    (folder / "feats.npz").write_bytes(b"")
    path = folder / "rel.yaml"  # no layers given: a features file gets its own layer, `features`
    path.write_text(yaml.safe_dump({"name": "rel", "models": ["zoo:standard"], "output_dir": "out",
                                    "datasets": ["digits", "features:feats.npz", "folder:images"],
                                    "extract_options": {"weights_dir": "weights", "n_per_class": 5}}))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    study = load_study(path)
    options = dict(study.grids[0].extract_options)
    assert options["weights_dir"] == str((folder / "weights").resolve())
    assert study.datasets == ("digits", f"features:{(folder / 'feats.npz').resolve()}",
                              f"folder:{(folder / 'images').resolve()}")
    # and that is what each job hands its notebooks (which run in notebooks/)
    job = next(j for j in expand_jobs(study) if j.dataset == "digits")
    assert notebook_parameters(job)["01_extract_features.ipynb"]["extract_options"]["weights_dir"] == \
        options["weights_dir"]


def test_a_yaml_alias_bomb_is_refused_before_it_is_expanded(tmp_path, capsys):
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 10)]
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(lines) + "\nname: bomb\nmodels: [zoo:standard]\ndatasets: [digits]\n"
                    "description: *a9\n")
    assert "its YAML aliases expand to more than 100,000 values" in _plan_error(path, capsys)
    loop = tmp_path / "loop.yaml"  # an alias inside its own anchor: endless without the cap
    loop.write_text("name: loop\nmodels: [zoo:standard]\ndatasets: [digits]\ndescription: &d [*d]\n")
    assert "expand to more than" in _plan_error(loop, capsys)
    # a few honest aliases are fine
    ok = tmp_path / "ok.yaml"
    ok.write_text("name: ok\nmodels: &m [zoo:standard]\ndatasets: [digits]\nlayers: [penultimate]\n"
                  "extract_options: &o {n_per_class: 5}\noutput_dir: out\ncache_dir: cache\n")
    assert load_study(ok).models == ("zoo:standard",)


@pytest.mark.parametrize("name", ["..", ".", "a/b", "../x", "", " spaced name", "~home"])
def test_a_study_name_must_be_a_plain_folder_name(tmp_path, capsys, name):
    err = _plan_error(_named(tmp_path, name), capsys)
    assert "name" in err


def _named(folder: Path, name: str) -> Path:
    path = folder / "named.yaml"
    path.write_text(yaml.safe_dump({"name": name, "models": ["zoo:standard"], "datasets": ["digits"],
                                    "output_dir": "out", "cache_dir": "cache"}))
    return path


def test_a_description_must_be_text(tmp_path, capsys):
    assert "'description' must be text" in _plan_error(_study(tmp_path, description=["a", "b"]), capsys)


def test_the_device_reaches_the_notebooks_that_use_it(tmp_path):
    job = expand_jobs(load_study(_study(tmp_path, device="cpu")))[0]
    params = notebook_parameters(job)
    assert params["01_extract_features.ipynb"]["device"] == "cpu"
    assert params["02_kstar.ipynb"]["device"] == "cpu"
    assert "device" not in params["03_skewness.ipynb"]


@pytest.mark.slow
def test_notebook_01_extracts_on_the_device_it_is_given(tmp_path):
    """The device parameter is used, not only declared: asking for CUDA where there is none fails in extraction."""
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this check needs a machine without CUDA")
    import papermill as pm

    from kstar_utils.pipeline.notebooks import run_notebook

    nb = Path(__file__).resolve().parents[1] / "notebooks" / "01_extract_features.ipynb"
    params = {"models": ["zoo:standard"], "dataset": "digits", "layers": ["logits"], "cache_dir": str(tmp_path),
              "features_index": str(tmp_path / "features_index.csv"), "device": "cuda"}
    with pytest.raises(pm.PapermillExecutionError, match="CUDA"):
        run_notebook(nb, tmp_path / "out.ipynb", params, progress_bar=False)
    params["device"] = "cpu"
    run_notebook(nb, tmp_path / "out.ipynb", params, progress_bar=False)
    assert (tmp_path / "features_index.csv").is_file()


def test_distributed_kstar_is_a_flag_and_the_scheduler_reaches_notebook_02(tmp_path, capsys):
    assert "'distributed_kstar' must be true or false" in _plan_error(_study(tmp_path, distributed_kstar="yes"), capsys)
    import dataclasses

    job = expand_jobs(load_study(_study(tmp_path, distributed_kstar=True)))[0]
    assert job.kstar_scheduler is None  # set by the runner, once the cluster exists
    params = notebook_parameters(dataclasses.replace(job, kstar_scheduler="tcp://127.0.0.1:8786"))
    assert params["02_kstar.ipynb"]["scheduler"] == "tcp://127.0.0.1:8786"
    assert "scheduler" not in params["01_extract_features.ipynb"]


@pytest.mark.slow
def test_a_study_computes_each_k_star_on_its_own_cluster(tmp_path):
    """distributed_kstar: the job's notebook 02 splits its k* over the study's workers, while the job itself holds
    a worker (it secedes from the worker's thread pool meanwhile): the run finishes, with the local k*."""
    from kstar_utils.io.index import load_kstar, read_index
    from kstar_utils.method.kstar import compute_kstar
    from kstar_utils.pipeline.features import load_features
    from kstar_utils.study import ClusterOptions, run_study

    study = load_study(_study(tmp_path, distributed_kstar=True, n_boot=20))
    result = run_study(study, cluster=ClusterOptions(workers=1, processes=False))
    assert {s["status"] for s in result.statuses.values()} == {"ok"}
    job = expand_jobs(study)[0]
    row = read_index(Path(job.job_dir) / "tables" / "kstar_index.csv", ["kstar_path", "features_path"]).iloc[0]
    fs = load_features(row["features_path"])
    assert (load_kstar(row["kstar_path"]).kstar == compute_kstar(fs.features, fs.labels)).all()
