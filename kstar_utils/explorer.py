"""An explorer for JupyterLab: pick a model, a layer and a class from a study's outputs and see the class's k̂*
distribution, its row of the fracture matrix and its sample gallery, without writing code.

    from kstar_utils.explorer import Explorer
    Explorer("../outputs/tables/kstar_index.csv")        # the notebooks' k* index (notebook 02) ...
    Explorer("../outputs/studies/cifar")                 # ... or a batch study's output folder (its summary.csv)
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from kstar_utils.models import short_name
from kstar_utils.io.index import INDEX_KEYS, indexed_kstar, read_index


def explorer_rows(source) -> pd.DataFrame:
    """(model, dataset, split, layer, kstar_path, features_path) rows of a k* index (a CSV path or a table) or of a
    study output folder (the finished rows of its summary.csv)."""
    if isinstance(source, (str, Path)) and Path(source).is_dir():
        summary = Path(source) / "summary.csv"
        if not summary.is_file():
            raise FileNotFoundError(f"{source} holds no summary.csv: is it a study's output folder?")
        t = pd.read_csv(summary)
        t = t[t["status"].isin(["ok", "skipped"])] if "status" in t.columns else t
        source = t
    t = read_index(source, INDEX_KEYS + ["kstar_path", "features_path"])
    if t.empty:
        raise ValueError("no finished (model, layer) rows to explore")
    return t.reset_index(drop=True)


class Explorer:
    """ipywidgets: three drop-downs (model, layer, class) and a view that follows them. `state` holds what the view
    shows (the class's samples table and fracture row), so code and tests can read it too."""

    def __init__(self, source, *, n: int = 4, layer: str = "penultimate"):
        """source: a k* index or a study folder (explorer_rows); n: samples in the gallery; layer: the layer it opens
        on (the model's first layer when it has no such layer)."""
        import ipywidgets as w

        self.rows = explorer_rows(source)
        self.n = n
        self.first_layer = layer
        self.state: dict = {}
        models = list(dict.fromkeys(self.rows["model"]))
        self.model = w.Dropdown(options=models, value=models[0], description="model")
        self.layer = w.Dropdown(description="layer")
        self.cls = w.Dropdown(description="class")
        self.out = w.Output()
        self.model.observe(lambda _: self._layers(), names="value")
        self.layer.observe(lambda _: self._classes(), names="value")
        self.cls.observe(lambda _: self.update(), names="value")
        self._layers()
        self.widget = w.VBox([w.HBox([self.model, self.layer, self.cls]), self.out])

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)

    def _row(self):
        t = self.rows[(self.rows["model"] == self.model.value) & (self.rows["layer"] == self.layer.value)]
        return t.iloc[0]

    @staticmethod
    def _offer(dropdown, options, then, prefer=None) -> None:
        """New options for a drop-down, keeping its choice where it still exists (else `prefer` where offered, else
        the first option); run `then` once the value is set (setting a new value runs it through the drop-down's
        own observer)."""
        keep = dropdown.value if dropdown.value in options else prefer if prefer in options else options[0]
        dropdown.options = options
        if dropdown.value == keep:
            then()
        else:
            dropdown.value = keep

    def _layers(self):
        self._offer(self.layer, list(dict.fromkeys(self.rows.loc[self.rows["model"] == self.model.value, "layer"])),
                    self._classes, prefer=self.first_layer)

    def _classes(self):
        res = indexed_kstar(self._row())
        self._offer(self.cls, res.names, self.update)

    def update(self) -> None:
        """Redraw the view for the current model, layer and class."""
        import matplotlib.pyplot as plt
        from IPython.display import display

        from kstar_utils.analysis.fracture import fracture_matrix
        from kstar_utils.pipeline.open_checks import gallery
        from kstar_utils.plotting.fracture import plot_class_view, plot_sample_gallery

        row = self._row()
        res = indexed_kstar(row)
        names = res.names
        c = names.index(self.cls.value)
        tidy = fracture_matrix(res.labels, res.labels[res.enemy], res.khat, names)
        fracture_row = tidy[tidy["class"] == self.cls.value].reset_index(drop=True)
        table, images = gallery(self.rows, model=row.model, layer=row.layer, class_name=self.cls.value, n=self.n)
        self.state = {"model": row.model, "layer": row.layer, "class": self.cls.value,
                      "khat": res.khat[res.labels == c], "fracture_row": fracture_row, "samples": table,
                      "images": len(images)}
        short = short_name(row.model)
        with self.out:
            self.out.clear_output(wait=True)
            title = f"{self.cls.value} · {short} · {row.layer}"
            fig = plot_class_view(self.state["khat"], fracture_row, title=title)
            display(fig)
            plt.close(fig)
            if images:
                fig = plot_sample_gallery(table, images, title=title)
                display(fig)
                plt.close(fig)
            display(table.round(3))
