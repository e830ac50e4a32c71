"""Publication figures. Every function takes precomputed results (k* with their skewness summaries, tables,
correlation rows) and returns a matplotlib Figure of one width (style.WIDTH); save it with save_figure.

    style          the look, how models are drawn (colour: training kind, marker: architecture family), save_figure,
                   labels placed clear of each other, text_overlaps
    distributions  per-class k̂* distributions: one model, side by side, a compact grid (log k̂* axis by default)
    models         across models: coefficient vs accuracies, within families, Γ vs Γ', heatmaps, depth profile,
                   metric sensitivity, noise
    fracture       the fracture matrix, its change between models, the sample gallery
    study          a study summary's figures (per dataset)
"""
from kstar_utils.plotting.distributions import plot_kstar_distribution, plot_kstar_grid, plot_kstar_side_by_side
from kstar_utils.plotting.fracture import plot_fracture_difference, plot_fracture_matrix, plot_sample_gallery
from kstar_utils.plotting.models import (plot_class_skew_heatmap, plot_correlation_matrix, plot_depth_profile,
                                         plot_family_panels, plot_gamma_vs_gamma_prime, plot_metric_sensitivity,
                                         plot_metric_vs_accuracy, plot_perturbation_curves, plot_value_heatmap)
from kstar_utils.plotting.style import (ACCURACY_NAMES, COEFFICIENT_NAMES, FAMILY_MARKERS, PATTERN_COLORS, SKEW_LIMIT,
                                        TRAINING_COLORS, WIDTH, model_looks, save_figure, set_style, short_name, show,
                                        text_overlaps)

__all__ = ["plot_kstar_distribution", "plot_kstar_grid", "plot_kstar_side_by_side", "plot_fracture_difference",
           "plot_fracture_matrix", "plot_sample_gallery", "plot_class_skew_heatmap", "plot_correlation_matrix",
           "plot_depth_profile", "plot_family_panels", "plot_gamma_vs_gamma_prime", "plot_metric_sensitivity",
           "plot_metric_vs_accuracy", "plot_perturbation_curves", "plot_value_heatmap", "save_figure", "set_style",
           "short_name", "show", "text_overlaps", "model_looks", "ACCURACY_NAMES", "COEFFICIENT_NAMES",
           "FAMILY_MARKERS", "PATTERN_COLORS", "SKEW_LIMIT", "TRAINING_COLORS", "WIDTH"]
