"""``python -m mbmix_fw`` is ``mbmix-fw``."""
import sys

from .cli import main

sys.exit(main())
