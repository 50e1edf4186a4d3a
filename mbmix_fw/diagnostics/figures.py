"""Writing a diagnostic's figure: one place for the file handling every plot of this layer shares."""
from __future__ import annotations

from pathlib import Path
from typing import Any


def save_figure(fig: Any, path: str | Path, title: str) -> Path:
    """Title, lay out and write ``fig`` (matplotlib) to ``path`` (its folder created), then close it."""
    import matplotlib.pyplot as plt

    fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
