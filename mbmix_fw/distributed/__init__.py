"""More than one process: sweeps on Ray (``grid``, ``sweep``, ``summary``) and data-parallel training (``ddp``).

A layer above the trainer: it builds ordinary runs (recipe → trainer → run folder) and never reaches into
the training loop except through the trainer's one documented hook, ``Trainer.grad_sync``. Ray and
``torch.distributed`` are imported only by the command that uses them.
"""
