"""Where ``aunet``'s command line lived before 0.2 (``aunet.cli.main`` now): a console script
installed by an older aunet (an editable install not yet reinstalled) still finds ``main`` here."""

from aunet.cli.main import main  # noqa: F401
