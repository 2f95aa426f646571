"""``aunet export``: a trained run as a Hugging Face model folder.

The folder holds ``config.json`` (aunet's resolved spec inside, and ``auto_map``),
``generation_config.json``, ``model.safetensors`` (the weights, under ``aunet.``), the bytes
tokenizer's files, the model of a splitter that reads one (``splitters/level-N/``: BLT's entropy
model, its weights and meta.json), the remote code (``configuration_aunet.py``, ``modeling_aunet.py``,
``tokenization_aunet.py``, copied by ``save_pretrained``) and ``aunet-runtime.zip``: aunet's
package and its three pure-Python dependencies (attrs, cattrs, pluggy, with their licenses) as
they were when the model was exported. The remote code imports the installed aunet when there is
one and this runtime otherwise, so ``AutoModelForCausalLM.from_pretrained(DIR,
trust_remote_code=True)`` needs ``transformers`` and ``torch`` alone. Loading runs that code:
it is what ``trust_remote_code`` asks the user to accept, as for any remote-code model; aunet's
own loaders never execute anything they read.

Generation defaults written with it: BOS and PAD are never generated (``suppress_tokens``, as
``aunet generate`` never samples them), EOS ends a row.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from aunet.core.convert import dump_spec
from aunet.core.errors import InputError
from aunet.core.tokens import BOS, EOS, PAD
from aunet.integrations.hf.runtime import RUNTIME_FILE, write_runtime  # noqa: F401 - re-exported


def export(ckpt: str | Path, out: str | Path) -> Path:
    """Write the Hugging Face folder of a run directory's newest checkpoint (or a checkpoint)."""
    from aunet.jobs.runs.directory import load_run

    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(f"--out: '{out}' exists and is not an empty folder; give a new folder for the export")
    run = load_run(ckpt, device="cpu")
    if run.spec.model.bpe:
        raise InputError(
            "aunet export writes byte models (AU-Nets and flat byte transformers); this checkpoint "
            "is the BPE baseline, whose tokenizer Hugging Face would need separately"
        )
    model, _config, tokenizer = hf_objects(run)
    model.generation_config.suppress_tokens = [BOS, PAD]
    model.generation_config.eos_token_id = EOS
    model.generation_config.pad_token_id = PAD
    # Written beside OUT and renamed into place: an interrupted export leaves no half folder.
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    except OSError as exc:
        raise InputError(f"--out: cannot write in '{out.parent}': {exc.strerror or exc}") from None
    try:
        with _quiet_transformers():
            model.save_pretrained(staging)  # config, weights, remote code and the runtime zip
            tokenizer.save_pretrained(staging)
        os.chmod(staging, _folder_mode())  # mkdtemp's folder is the owner's alone; the export is not
        if out.exists():
            out.rmdir()  # empty, checked above
        staging.rename(out)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise InputError(
            f"cannot write the export to '{out}': {exc.strerror or exc} (nothing was left behind)"
        ) from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def _folder_mode() -> int:
    """0o777 less the umask: what ``mkdir`` gives every other folder."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o777 & ~mask


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """``save_pretrained`` without transformers' progress bar (aunet prints one line when done)."""
    from transformers.utils import logging as hf_logging

    shown = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if shown:
            hf_logging.enable_progress_bar()


def hf_objects(run: Any) -> tuple[Any, Any, Any]:
    """The ``transformers`` model (wrapping ``run.model``, no copy), its config and tokenizer."""
    from aunet.core.version import version
    from aunet.integrations.hf.bridge import exported_spec
    from aunet.integrations.hf.configuration_aunet import AUNetConfig
    from aunet.integrations.hf.modeling_aunet import AUNetForCausalLM
    from aunet.integrations.hf.tokenization_aunet import AUNetTokenizer

    context = run.spec.model.context
    config = AUNetConfig(
        spec=dump_spec(exported_spec(run.spec)), aunet_version=version(), step=run.step, max_position_embeddings=context
    )
    model = AUNetForCausalLM(config, aunet_model=run.model).eval()
    return model, config, AUNetTokenizer(model_max_length=context)
