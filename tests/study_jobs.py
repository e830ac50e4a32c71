"""A finished study job without papermill, for the tests of done.json and of what makes a job run again.

Test files import it like the oracle: `from study_jobs import finish_job` (tests/ is on sys.path under pytest).
"""
from __future__ import annotations

from pathlib import Path

from kstar_utils.io import cache, index
from kstar_utils.pipeline import stages


def finish_job(base_dir: Path, dataset: str, layer: str):
    """The one job of a study of zoo:standard on `dataset` at `layer` (output and cache under `base_dir`), its
    features, k* and skewness tables and its done.json written as run_job writes them. Returns (job, the done.json
    record, the k* index table)."""
    from kstar_utils.study import expand_jobs, study_from_dict
    from kstar_utils.study.jobs import _content_record, job_paths, notebook_parameters

    study = study_from_dict({"name": "t", "models": ["zoo:standard"], "datasets": [dataset], "layers": [layer],
                             "output_dir": "out", "cache_dir": "cache"}, base_dir=base_dir)
    job = expand_jobs(study)[0]
    params = notebook_parameters(job)
    tables = ({k: params["03_skewness.ipynb"][k] for k in ("skewness_table", "per_class_table")}
              | {"kstar_index": params["02_kstar.ipynb"]["kstar_index"],
                 "features_index": params["01_extract_features.ipynb"]["features_index"]})
    feats = stages.extract_stage([job.model], job.dataset, layers=list(job.layers), root=job.cache_dir,
                                 progress=False)
    kidx = stages.kstar_stage(feats, root=job.cache_dir, progress=False)
    models, per_class = stages.skewness_stage(kidx)
    for name, table in (("features_index", feats), ("kstar_index", kidx), ("skewness_table", models),
                        ("per_class_table", per_class)):
        index.write_table(table, tables[name])
    done = cache.provenance(job.spec, tables=tables, **_content_record(tables))
    cache.write_json_atomic(job_paths(job)["done"], done)
    return job, done, kidx
