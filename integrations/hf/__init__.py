"""aunet for Hugging Face ``transformers`` (the ``aunet[hf]`` extra).

Importing this package registers aunet with the Auto classes, so that with aunet installed
``AutoConfig``, ``AutoModelForCausalLM`` and ``AutoTokenizer`` load an exported folder without
``trust_remote_code``. ``export`` (``aunet export``) writes such a folder; its remote code works
on a machine with ``transformers`` alone (``aunet.integrations.hf.exporter``, ``.runtime``).
"""

from __future__ import annotations

try:
    import transformers
except ImportError:  # pragma: no cover - the extra is missing
    from aunet.core.errors import InputError

    raise InputError("Hugging Face transformers is not installed: pip install 'aunet[hf]'") from None

from typing import Any

from aunet.integrations.hf.configuration_aunet import AUNetConfig
from aunet.integrations.hf.modeling_aunet import AUNetForCausalLM
from aunet.integrations.hf.tokenization_aunet import AUNetTokenizer


def register() -> None:
    """Make the Auto classes know ``model_type = "aunet"`` (idempotent)."""
    transformers.AutoConfig.register("aunet", AUNetConfig, exist_ok=True)
    transformers.AutoModelForCausalLM.register(AUNetConfig, AUNetForCausalLM, exist_ok=True)
    transformers.AutoTokenizer.register(AUNetConfig, slow_tokenizer_class=AUNetTokenizer, exist_ok=True)


register()


def __getattr__(name: str) -> Any:
    # ``export`` reads runs (aunet's jobs): loaded on first use, so that an exported model's
    # runtime, which holds no jobs, imports this package.
    if name == "export":
        from aunet.integrations.hf.exporter import export

        return export
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["AUNetConfig", "AUNetForCausalLM", "AUNetTokenizer", "export", "register"]
