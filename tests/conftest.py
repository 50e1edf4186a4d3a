"""Shared test helpers."""
from __future__ import annotations

import pytest


def _train_until_checkpoint_at(trainer, iteration: int) -> None:
    """Train until the checkpoint of ``iteration`` is on disk, then stop as a crash would."""
    save = trainer.save_checkpoint

    def save_then_crash(*args, **kwargs):
        save(*args, **kwargs)
        if trainer.iteration == iteration:
            raise KeyboardInterrupt

    trainer.save_checkpoint = save_then_crash
    with pytest.raises(KeyboardInterrupt):
        trainer.train()


@pytest.fixture
def crash_after_checkpoint():
    """``crash_after_checkpoint(trainer, iteration)``: an interrupted run whose last checkpoint is ``iteration``."""
    return _train_until_checkpoint_at


def pytest_collection_modifyitems(config, items):
    """Tests marked ``cuda`` are skipped, not failed, where torch sees no CUDA device (``pytest -m cuda``
    runs them on a GPU machine; ``benchmarks/gpu_suite.py`` does it with the GPU measurements)."""
    marked = [item for item in items if item.get_closest_marker("cuda")]
    if not marked:
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (torch.cuda.is_available() is False)")
    for item in marked:
        item.add_marker(skip)
