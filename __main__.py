"""``python -m aunet``: the ``aunet`` command line."""

import sys

from aunet.jobs.cli import main

sys.exit(main())
