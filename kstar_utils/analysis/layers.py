"""Layers that are the same features under two names (a ResNet's `layer3` output, globally pooled, is bitwise its
`penultimate` layer): counted once in a figure or a statistic over layers, not twice."""
from __future__ import annotations

from typing import Sequence

import pandas as pd

#: columns that identify a layer's features by content, in the order they are trusted: the features file's sha256,
#: else the k* file's (identical features give an identical k* file)
CONTENT_COLUMNS = ("features_sha256", "kstar_sha256")
#: of two names for the same features the one every model has is kept, so a figure by layer holds all models
PREFERRED = ("penultimate", "logits", "embedding")
_WITHIN = ("model", "dataset", "split", "metric")


def _groups(table: pd.DataFrame, prefer: Sequence[str]):
    """(the kept layer of each row's group of identical features, the content column), or (None, None) when the
    table cannot tell identical features apart."""
    within = [c for c in _WITHIN if c in table.columns]
    content = next((c for c in CONTENT_COLUMNS if c in table.columns and table[c].notna().any()), None)
    if content is None or "layer" not in table.columns:
        return None, None
    rank = table["layer"].map(lambda layer: list(prefer).index(layer) if layer in prefer else len(prefer))
    ordered = table[within + [content, "layer"]].reset_index(drop=True)
    ordered = ordered.assign(_rank=rank.to_numpy(), _pos=range(len(table)))
    ordered = ordered.sort_values(["_rank", "_pos"], kind="stable")
    first = ordered.groupby(within + [content], sort=False, dropna=False)["layer"].transform("first")
    return pd.Series(first.sort_index().to_numpy(), index=table.index), content


def repeated_layers(table: pd.DataFrame, *, prefer: Sequence[str] = PREFERRED) -> pd.DataFrame:
    """Rows (model, dataset, ..., layer, same_as) of every layer whose features are those of another layer of the
    same model (and dataset, split, metric where the table has them), by the content hashes of CONTENT_COLUMNS;
    `same_as` is the layer kept for them (the first of `prefer` among them, else the first in the table). Empty
    when the table has no hash column."""
    within = [c for c in _WITHIN if c in table.columns]
    cols = within + ["layer", "same_as"]
    kept, content = _groups(table, prefer)
    if kept is None:
        return pd.DataFrame(columns=cols)
    rep = table.assign(same_as=kept)[table[content].notna() & (kept != table["layer"])]
    return rep[cols].drop_duplicates().reset_index(drop=True)


def distinct_layers(table: pd.DataFrame, *, prefer: Sequence[str] = PREFERRED) -> pd.DataFrame:
    """`table` without the rows whose features are another row's of the same model (repeated_layers), in its
    order; of such a group the row of the first layer in `prefer` is kept, else the first row. Rows without a hash
    are kept."""
    kept, content = _groups(table, prefer)
    if kept is None:
        return table
    return table[~(table[content].notna() & (kept != table["layer"]))]
