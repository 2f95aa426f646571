"""``python -m aunet``: the ``aunet`` command line."""

import sys

from aunet.cli.main import main

sys.exit(main())
