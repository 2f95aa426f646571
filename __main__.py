"""``python -m aunet``: the ``aunet`` command line."""

import sys

from aunet.core.cli import main

sys.exit(main())
