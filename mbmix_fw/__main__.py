"""``python -m mbmix_fw`` is ``mbmix-fw``; under ``torchrun`` (several ranks) ``run`` and ``resume`` train
data-parallel (see :func:`mbmix_fw.commands.cli.console_main`)."""
import sys

from .commands.cli import console_main

sys.exit(console_main())
