"""The two figures of a benchmark: the test ROC curve and the confusion matrix, as PNG files.

Owns drawing only (matplotlib with the non-interactive Agg backend, so no display is needed);
the numbers come from `metrics`.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
import numpy as np  # noqa: E402

from ctcurate.core.atomic import atomic_path

Band = tuple[np.ndarray, np.ndarray, np.ndarray]  # fpr grid, low tpr, high tpr


def roc_png(
    path: Path,
    curves: dict[str, tuple[np.ndarray, np.ndarray, float]],
    title: str,
    bands: dict[str, Band] | None = None,
    n: int | None = None,
) -> None:
    """One ROC line per named model {name: (fpr, tpr, auc)}, each with its 95% bootstrap band if given."""
    fig, ax = plt.subplots(figsize=(5.6, 5.4), dpi=100)
    for k, (name, (fpr, tpr, auc)) in enumerate(curves.items()):
        colour = f"C{k}"
        ax.plot(fpr, tpr, color=colour, label=f"{name} (AUC {auc:.3f})")
        band = (bands or {}).get(name)
        if band is not None and not np.isnan(band[1]).all():
            ax.fill_between(band[0], band[1], band[2], color=colour, alpha=0.18, linewidth=0,
                            label="95% bands (bootstrap over test images)" if k == 0 else None)
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=0.8)
    sub = f"\n{n} test images" if n is not None else ""
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="false positive rate (1 - specificity)", ylabel="true positive rate (sensitivity)")
    ax.set_title(title + sub, fontsize=10)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    _save(fig, path)


def confusion_png(path: Path, counts: dict[str, int], title: str) -> None:
    """2x2 matrix, rows = true class, columns = predicted class, COVID first; each cell with its row share."""
    grid = np.array([[counts["tp"], counts["fn"]], [counts["fp"], counts["tn"]]])
    rows = grid.sum(axis=1, keepdims=True)
    share = np.divide(grid, rows, out=np.zeros(grid.shape, dtype=float), where=rows > 0)
    fig, ax = plt.subplots(figsize=(5.4, 4.6), dpi=100)
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    labels = ["COVID", "NonCOVID"]
    ax.set_xticks([0, 1], labels=labels)
    ax.set_yticks([0, 1], labels=[f"{lab}\n(n = {int(r)})" for lab, r in zip(labels, rows[:, 0])])
    ax.set(xlabel="predicted", ylabel="true")
    ax.set_title(f"{title}\n{int(grid.sum())} test images; % of each true class", fontsize=10)
    for i in range(2):
        for j in range(2):
            ax.text(j, i, f"{grid[i, j]}\n{100 * share[i, j]:.1f}%", ha="center", va="center",
                    color="white" if share[i, j] > 0.5 else "black", fontsize=13)
    fig.tight_layout()
    _save(fig, path)


def _save(fig: Figure, path: Path) -> None:
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)
