"""``python -m cloudinv`` is the ``cloudinv`` command."""

import sys

from cloudinv.cli import main

sys.exit(main())
