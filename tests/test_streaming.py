"""Streamed corpora: folders of .jsonl and .parquet files train lazily and resume exactly after a
kill. (A corpus far larger than a window trains in bounded memory: tests/test_trust_paths.py.)"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from aunet.core.encoding import SplitterEncoding
from aunet.core.levels import SplitterStack
from aunet.jobs.data.streaming import StreamingData, StreamSource
from aunet.jobs.runs import checkpoint
from aunet.splitters.words import Whitespace

from conftest import TINY, run_cli

WORDS = [
    "In",
    "the",
    "beginning",
    "God",
    "created",
    "the",
    "heavens",
    "and",
    "the",
    "earth",
    "and",
    "the",
    "waters",
    "were",
    "divided",
    "from",
    "the",
    "light",
    "and",
    "the",
    "darkness",
    "was",
    "called",
    "night",
]


def text(i: int, words: int) -> str:
    rng = np.random.default_rng(i)
    return " ".join(WORDS[k] for k in rng.integers(0, len(WORDS), words)) + ".\n"


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """200 small files: 100 .jsonl (5 documents each) and 100 .parquet (5 rows each)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = tmp_path_factory.mktemp("stream") / "corpus"
    root.mkdir()
    for f in range(100):
        lines = [json.dumps({"text": text(f * 10 + j, 60)}) for j in range(5)]
        (root / f"part-{f:03d}.jsonl").write_text("\n".join(lines) + "\n")
        table = pa.table({"text": [text(5000 + f * 10 + j, 60) for j in range(5)], "id": list(range(5))})
        pq.write_table(table, root / f"part-{f:03d}.parquet")
    return root


def spec_file(folder: Path, extra: str = "") -> Path:
    path = folder.parent / "spec.toml"
    path.write_text(TINY + 'data = { stream = "on", buffer_bytes = 4096 }\n' + extra)
    return path


def losses(run: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines() if '"loss"' in line]


def test_the_stream_resumes_exactly_at_any_point(folder: Path) -> None:
    stack = SplitterEncoding(SplitterStack((Whitespace(),)))
    source = StreamSource(folder)
    whole = StreamingData(source, stack, context=512, batch_size=8, seed=1, buffer_bytes=8192)
    batches = [whole.next() for _ in range(120)]  # past one epoch: 1,000 documents, 900 trained on
    for cut in (1, 7, 50, 95):
        first = StreamingData(source, stack, context=512, batch_size=8, seed=1, buffer_bytes=8192)
        for _ in range(cut):
            first.next()
        again = StreamingData(source, stack, context=512, batch_size=8, seed=1, buffer_bytes=8192)
        again.load_state_dict(json.loads(json.dumps(first.state_dict())))
        for expected in batches[cut : cut + 8]:
            got = again.next()
            assert np.array_equal(got.tokens, expected.tokens) and np.array_equal(got.targets, expected.targets)
    assert whole.position.epoch >= 1  # rows ran into the second epoch


def test_streaming_reads_every_training_document_once_per_epoch(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:

    source = StreamSource(folder)
    numbers = [n for _, _, _, n, _ in source.documents()]
    assert numbers == list(range(1000)) and len(source.files) == 200
    read: list[tuple[int, bytes]] = []

    class Recording(SplitterEncoding):
        def encode(self, text: bytes, *, eos: bool = True):
            read.append((data.position.epoch, text))
            return super().encode(text, eos=eos)

    data = StreamingData(
        source, Recording(SplitterStack((Whitespace(),))), context=512, batch_size=8, seed=0, buffer_bytes=4096
    )
    while data.position.epoch == 0:
        data.next()
    first_epoch = [text for epoch, text in read if epoch == 0]
    assert len(first_epoch) == len(set(first_epoch)) == 900  # every document but the validation ones, once


@pytest.mark.slow
def test_a_folder_of_jsonl_and_parquet_trains_and_resumes_exactly_after_a_kill(folder: Path, tmp_path: Path) -> None:
    spec = spec_file(folder)
    common = ["train", "--spec", str(spec), "--data", str(folder), "--steps", "12"]
    whole = run_cli(*common, "--out", str(tmp_path / "whole"))
    assert whole.returncode == 0, whole.stderr
    out = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "aunet", *common, "--out", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while time.time() < deadline and not (out / "checkpoints" / "step-00000008" / "meta.json").exists():
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert checkpoint.newest_complete(out)[0] is not None
    resumed = run_cli("train", "--out", str(out), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert losses(out) == losses(tmp_path / "whole")
    record = json.loads((out / "run.json").read_text())
    assert record["fingerprint"]["streamed"] and len(record["fingerprint"]["files"]) == 200


def test_a_corpus_in_memory_gives_the_validation_documents_its_limit_reads() -> None:
    from aunet.jobs.data.corpus import Document, split
    from aunet.jobs.data.packing import evaluation_rows
    from aunet.jobs.data.source import MemoryText

    stack = SplitterEncoding(SplitterStack((Whitespace(),)))
    memory = MemoryText(split([Document(str(i), text(i, 20 + i).encode()) for i in range(200)], "test"))
    whole = memory.validation(stack)
    for limit in (0, 1, 100, len(whole[0]) - 1, len(whole[0]), 5000):
        kept = memory.validation(stack, limit)
        assert len(kept) < len(whole)
        assert [b.targets.tolist() for b in evaluation_rows(kept, 64, limit)] == [
            b.targets.tolist() for b in evaluation_rows(whole, 64, limit)
        ]
