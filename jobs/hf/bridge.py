"""The bridge of models exported before 0.2 (their remote code imports this name): it is
``aunet.integrations.hf.bridge``."""

from aunet.integrations.hf.bridge import *
from aunet.integrations.hf.bridge import aunet_version, build, write_runtime  # noqa: F401
