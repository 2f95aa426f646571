"""How the benchmarks time a part of a call (``benchmarks.timing.timed_from_start``), and that the
decoding benchmark's rates are its steps' alone, without the prefill before them."""

from __future__ import annotations

import types

import pytest

from conftest import ROOT


@pytest.fixture
def benchmarks(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.syspath_prepend(str(ROOT))
    import benchmarks.generate
    import benchmarks.timing

    return benchmarks


def test_a_call_is_timed_from_its_start_to_its_end(benchmarks) -> None:
    timed_from_start = benchmarks.timing.timed_from_start
    ticks = iter([5.0, 7.5])
    assert timed_from_start(lambda start: start() or "done", clock=lambda: next(ticks)) == ("done", 2.5)
    # on_start (a profiler's start) runs before the clock is read.
    seen: list[str] = []
    timed_from_start(
        lambda start: start(), on_start=lambda: seen.append("on_start"), clock=lambda: seen.append("clock") or 0.0
    )
    assert seen == ["on_start", "clock", "clock"]
    with pytest.raises(RuntimeError, match="ended before the part to time began"):
        timed_from_start(lambda start: None)


def _fake_clock(monkeypatch: pytest.MonkeyPatch, benchmarks) -> list[int]:
    """A clock (the timing module's) that moves only when a prefill (1,000 s) or a step (1 ms)
    runs; returns the list each prefilled row's length (BOS included) goes into."""
    from aunet.jobs.inference import generate as inference

    now, prefilled = [0.0], []

    def advancing(fn, seconds, lengths=None):
        def run(*args, **kwargs):  # a prefill's are (model, state, tokens, levels, lengths)
            now[0] += seconds
            if lengths is not None:
                lengths.extend(args[4].tolist())
            return fn(*args, **kwargs)

        return run

    for name in ("prefill", "prefill_chunks"):
        monkeypatch.setattr(inference, name, advancing(getattr(inference, name), 1000.0, prefilled))
    monkeypatch.setattr(inference, "step", advancing(inference.step, 0.001))
    monkeypatch.setattr(benchmarks.timing, "time", types.SimpleNamespace(perf_counter=lambda: now[0]))
    return prefilled


def test_the_decoding_benchmark_times_the_steps_and_not_the_prefill(
    benchmarks, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_clock(monkeypatch, benchmarks)
    records = benchmarks.generate.run(smoke=True, specs=("byte-tiny",), modes=("eager",), reads=False)
    assert [(r["batch"], r["ms_per_step"]) for r in records] == [(1, 1.0), (2, 1.0)]
    # 32 steps after the first byte make 32 more bytes per row in 32 ms.
    assert [round(r["bytes_per_s"]) for r in records] == [1000, 2000]


def test_the_decoding_benchmark_takes_a_prompt_length_and_numbers_of_rows(
    benchmarks, monkeypatch: pytest.MonkeyPatch
) -> None:
    prefilled = _fake_clock(monkeypatch, benchmarks)
    records = benchmarks.generate.run(
        specs=("byte-tiny",), modes=("eager",), reads=False, rounds=1, prompt=100, batches=(3,)
    )
    assert [(r["batch"], r["prompt_bytes"], r["bytes_per_s"]) for r in records] == [(3, 100, 3000.0)]
    assert set(prefilled) == {101}  # each row's BOS and its 100 bytes


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        (["--prompt-bytes", "991"], "--prompt-bytes: prompt bytes must be 1 to 990 ("),
        (["--prompt-bytes", "0"], "--prompt-bytes: prompt bytes must be 1 to 990 ("),
        (["--rows", "16,0"], "--rows must be numbers of rows of 1 or more, comma-separated (like 1,16,64), got '16,0'"),
        (["--rows", "many"], "--rows must be numbers of rows of 1 or more"),
    ],
)
def test_the_decoding_benchmark_names_a_bad_prompt_length_or_number_of_rows(
    benchmarks, capsys: pytest.CaptureFixture, argv: list[str], error: str
) -> None:
    from benchmarks.__main__ import main

    with pytest.raises(SystemExit) as exited:
        main(["generate", *argv])
    assert exited.value.code == 2
    assert f"error: {error}" in capsys.readouterr().err.splitlines()[-1]
