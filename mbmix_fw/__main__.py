"""``python -m mbmix_fw`` is ``mbmix-fw``; under ``torchrun`` (several ranks) ``run`` and ``resume`` train
data-parallel (see :mod:`mbmix_fw.distributed.ddp`)."""
import sys

from .distributed.ddp import launched_by_torchrun

if launched_by_torchrun():
    from .distributed.ddp import main
else:
    from .cli import main

sys.exit(main())
