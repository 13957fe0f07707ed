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

from ctcurate.core.atomic import atomic_path  # noqa: E402


def roc_png(path: Path, curves: dict[str, tuple[np.ndarray, np.ndarray, float]], title: str) -> None:
    """One ROC line per named model: {name: (fpr, tpr, auc)}."""
    fig, ax = plt.subplots(figsize=(5, 5), dpi=100)
    for name, (fpr, tpr, auc) in curves.items():
        ax.plot(fpr, tpr, label=f"{name} (AUC {auc:.3f})")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=0.8)
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="false positive rate (1 - specificity)", ylabel="true positive rate (sensitivity)", title=title)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    _save(fig, path)


def confusion_png(path: Path, counts: dict[str, int], title: str) -> None:
    """2x2 matrix, rows = true class, columns = predicted class, COVID first."""
    grid = np.array([[counts["tp"], counts["fn"]], [counts["fp"], counts["tn"]]])
    fig, ax = plt.subplots(figsize=(4.2, 4), dpi=100)
    ax.imshow(grid, cmap="Blues", vmin=0, vmax=max(int(grid.max()), 1))
    labels = ["COVID", "NonCOVID"]
    ax.set_xticks([0, 1], labels=labels)
    ax.set_yticks([0, 1], labels=labels)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    top = grid.max() if grid.size else 0
    for i in range(2):
        for j in range(2):
            ax.text(j, i, str(grid[i, j]), ha="center", va="center", color="white" if grid[i, j] > top / 2 else "black", fontsize=14)
    fig.tight_layout()
    _save(fig, path)


def _save(fig: Figure, path: Path) -> None:
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)
