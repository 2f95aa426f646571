"""An aunet model as a ``transformers`` causal LM: ``from_pretrained``, ``generate``, ``save_pretrained``.

``AUNetForCausalLM`` wraps aunet's own model (``self.aunet``): the logits are aunet's, and
``generate`` decodes with aunet's per-stage KV caches (``aunet.core.decoding``), where the deep
stages run only at word boundaries, rather than recomputing the sequence for every byte.

This file is also the remote code of an exported folder (``aunet export``): it imports only
``transformers`` and ``torch`` and reaches aunet through ``aunet.integrations.hf.bridge``, from the
installed aunet when there is one, else from ``aunet-runtime.zip`` in the exported folder (aunet
and its pure-Python dependencies attrs, cattrs and pluggy, as they were when the model was
exported), so that ``AutoModelForCausalLM.from_pretrained(DIR, trust_remote_code=True)`` works on
a machine with ``transformers`` alone. A splitter's model (BLT's entropy model) is read from the
same folder or repository (``splitters/level-N/``).
"""

from __future__ import annotations

import importlib
import importlib.abc
import os
import sys
import warnings
import zipfile
import zipimport
from typing import Any, ClassVar

import torch
from transformers import GenerationMixin, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

from .configuration_aunet import AUNetConfig

RUNTIME_FILE = "aunet-runtime.zip"
IGNORE_INDEX = -100  # transformers' label for "not predicted"


def _runtime_zip(config: AUNetConfig) -> str:
    """The bundled runtime of the folder (or Hub repository) the config came from."""
    where = getattr(config, "name_or_path", "") or ""
    local = os.path.join(where, RUNTIME_FILE)
    if os.path.isfile(local):
        return local
    from transformers.utils import cached_file

    found = cached_file(where, RUNTIME_FILE) if where else None
    if not found:
        raise ImportError(
            f"aunet is not installed and {RUNTIME_FILE} is not in '{where}': pip install aunet, "
            "or export the model again with `aunet export`"
        )
    return found


def _fetch(config: AUNetConfig, name: str) -> str:
    """A file of the folder (or Hub repository) the config came from, as a local path: the model
    of a splitter that reads one (``splitters/level-N/``)."""
    where = getattr(config, "name_or_path", "") or ""
    local = os.path.join(where, name)
    if os.path.isfile(local):
        return local
    from transformers.utils import cached_file

    found = cached_file(where, name) if where else None
    if not found:
        raise OSError(f"{name} is not in '{where}': export the model again with `aunet export`")
    return found


#: What an export's runtime zip may provide: aunet and its pure-Python dependencies, nothing else.
RUNTIME_PACKAGES = ("aunet", "attr", "attrs", "cattr", "cattrs", "pluggy")


class _Runtime(importlib.abc.MetaPathFinder):
    """Serves the packages of an export's runtime zip (``RUNTIME_PACKAGES``, and their metadata,
    which aunet's plugin registry reads) to imports that nothing installed answers, and nothing
    else: the zip never goes on ``sys.path``, so a module in it by any other name (a
    ``zstandard.py``) can never shadow a later, unrelated import."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.importer = zipimport.zipimporter(path)
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
        self.dist_infos = sorted({n.split("/")[0] for n in names if n.split("/")[0].endswith(".dist-info")})

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if path is not None or fullname not in RUNTIME_PACKAGES:
            return None  # submodules are found through their package's own __path__ (inside the zip)
        return self.importer.find_spec(fullname)

    def find_distributions(self, context: Any = None) -> Any:
        from importlib.metadata import PathDistribution

        wanted = getattr(context, "name", None)
        for info in self.dist_infos:
            project = info.removesuffix(".dist-info").rsplit("-", 1)[0]
            if wanted is None or _normal(wanted) == _normal(project):
                yield PathDistribution(zipfile.Path(self.path, at=f"{info}/"))


def _normal(name: str) -> str:
    return name.lower().replace("-", "_").replace(".", "_")


def load_bridge(config: AUNetConfig) -> Any:
    """``aunet.integrations.hf.bridge``: from the installed aunet, else from the exported folder's runtime.
    An installed aunet other than the exporting one is used, with a warning naming both."""
    try:
        bridge = importlib.import_module("aunet.integrations.hf.bridge")
        running = bridge.aunet_version()
        if config.aunet_version and running != config.aunet_version:
            warnings.warn(
                f"this model was exported by aunet {config.aunet_version}; the installed aunet {running} runs it",
                stacklevel=3,
            )
        return bridge
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] not in RUNTIME_PACKAGES:
            raise
    path = _runtime_zip(config)
    if not any(isinstance(f, _Runtime) and f.path == path for f in sys.meta_path):
        sys.meta_path.append(_Runtime(path))  # after every installed package: an installed attrs or pluggy wins
    importlib.invalidate_caches()
    return importlib.import_module("aunet.integrations.hf.bridge")


class AUNetForCausalLM(PreTrainedModel, GenerationMixin):
    """aunet's model for ``transformers``: (B, T) token ids -> (B, T, 259) next-token logits.

    Inputs are aunet's ids (``AUNetTokenizer``: bytes 0..255, BOS 256 first, EOS 257, PAD 258),
    padded on either side, with ``attention_mask`` saying which tokens are real. A row may hold
    at most the model's context (``config.max_position_embeddings``). Beam search is not
    supported (aunet's caches are per row and cannot be reordered); greedy decoding and sampling are.
    """

    config_class = AUNetConfig
    base_model_prefix = "aunet"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = False
    _no_split_modules: ClassVar[list[str]] = []
    _auto_class = "AutoModelForCausalLM"  # save_pretrained writes auto_map and copies this file

    def __init__(self, config: AUNetConfig, aunet_model: Any = None) -> None:
        super().__init__(config)
        self.bridge = load_bridge(config)
        if aunet_model is not None and aunet_model.spec.model.context != config.max_position_embeddings:
            raise ValueError("aunet_model does not match config: its context differs")
        if aunet_model is None:
            aunet_model = self.bridge.build(config.spec, fetch=lambda name: _fetch(config, name))
        self.aunet = aunet_model
        self.post_init()

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        return False  # aunet keeps its own caches (``bridge.AUNetCache``), one per stage

    def _init_weights(self, module: Any) -> None:
        pass  # aunet initializes its own modules when it builds them; checkpoints overwrite them

    def get_input_embeddings(self) -> torch.nn.Module:
        return self.aunet.embed

    def get_output_embeddings(self) -> torch.nn.Module:
        return self.aunet.head

    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        cache: Any = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        past_key_values: Any = None,
        **kwargs: Any,
    ) -> CausalLMOutputWithPast:
        """Logits of every position; with ``use_cache=True``, also aunet's caches after them, and
        given those caches, the logits of the one new token per row (what ``generate`` asks for).
        ``labels`` (usually ``input_ids``) give the mean next-token cross-entropy, shifted inside."""
        cache = cache if cache is not None else past_key_values
        if isinstance(cache, self.bridge.AUNetCache):
            logits = self.bridge.step(self.aunet, cache, input_ids)  # (B, 1, V)
        elif use_cache:  # generate's first call (a plain call scores, without building caches)
            logits, cache = self.bridge.prefill(self.aunet, input_ids, attention_mask)  # (B, T, V)
        else:
            logits, cache = self._scores(input_ids, attention_mask), None
        loss = None
        if labels is not None:
            targets = labels[:, 1:]
            if attention_mask is not None:
                targets = targets.masked_fill(attention_mask[:, 1:] == 0, IGNORE_INDEX)
            loss = torch.nn.functional.cross_entropy(
                logits[:, :-1].reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=IGNORE_INDEX
            )
        return CausalLMOutputWithPast(loss=loss, logits=logits, **{_CACHE_FIELD: cache})

    def _scores(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        if torch.is_grad_enabled() and self.training:
            warnings.warn("AUNetForCausalLM scores without gradients; train with `aunet train`", stacklevel=3)
        return self.bridge.teacher_forced(self.aunet, input_ids, attention_mask)

    def prepare_inputs_for_generation(
        self,
        input_ids: torch.LongTensor,
        cache: Any = None,
        attention_mask: torch.Tensor | None = None,
        past_key_values: Any = None,
        use_cache: bool | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        cache = cache if cache is not None else past_key_values
        if isinstance(cache, self.bridge.AUNetCache):
            return {"input_ids": input_ids[:, -1:], "cache": cache, "use_cache": True}
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "use_cache": use_cache if use_cache is not None else self.generation_config.use_cache,
        }

    def save_pretrained(self, save_directory: str | os.PathLike, *args: Any, **kwargs: Any) -> Any:
        """``transformers``' save (config, weights, this code), plus ``aunet-runtime.zip``, so that
        the folder, or the Hub repository ``push_to_hub`` uploads it to, loads without aunet."""
        result = super().save_pretrained(save_directory, *args, **kwargs)
        self.bridge.write_runtime(os.path.join(save_directory, RUNTIME_FILE))
        self.bridge.write_splitter_models(self.aunet, str(save_directory))  # a splitter's model, if it reads one
        return result

    def generate(self, *args: Any, **kwargs: Any) -> Any:
        config = kwargs.get("generation_config") or self.generation_config
        if kwargs.get("num_beams", getattr(config, "num_beams", 1) or 1) > 1:
            raise ValueError(
                "aunet's KV caches cannot be reordered between beams: use greedy decoding or sampling (num_beams=1)"
            )
        return super().generate(*args, **kwargs)


# ``transformers`` 5 names the cache of an output ``cache``; version 4 named it ``past_key_values``.
_CACHE_FIELD = "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"

__all__ = ["AUNetForCausalLM", "load_bridge"]
