"""The plugin registry: built-ins through entry points, duplicates, bad plugins, the autoload
switch, and a third-party splitter registered in code."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path
from typing import ClassVar

import attrs
import pytest

from aunet.core import Family, PluginError, Registry, hookimpl
from aunet.jobs.config import parse_spec
from aunet.splitters.words import Whitespace
from aunet.testing import check_splitter

from conftest import ROOT, run_cli

EXAMPLE = ROOT / "examples" / "aunet-example-splitter"


def _plugin(name: str, **hooks: object) -> types.ModuleType:
    module = types.ModuleType(name)
    for hook, fn in hooks.items():
        setattr(module, hook, hookimpl(fn))
    return module


def test_a_new_registry_is_empty_and_loads_nothing_at_import() -> None:
    registry = Registry()
    assert all(not registry.kinds(family) for family in Family)
    assert registry.plugins == {}


def test_builtins_load_through_the_entry_point_group(registry: Registry) -> None:
    splitters = registry.kinds(Family.SPLITTER)
    assert {"whitespace", "word-pair", "4-word", "n-word"} <= set(splitters)
    origin = splitters["whitespace"].origin
    assert origin.distribution == "aunet" and origin.builtin and origin.plugin == "builtin-splitters"
    assert splitters["whitespace"].cls is Whitespace


def test_duplicate_kind_names_both_origins(registry: Registry) -> None:
    @attrs.frozen
    class Impostor(Whitespace):
        kind: ClassVar[str] = "whitespace"

    plugin = _plugin("impostor", aunet_register_splitters=lambda registry: registry.add_splitter(Impostor))
    with pytest.raises(PluginError) as err:
        registry.register(plugin, name="impostor")
    message = str(err.value)
    assert "splitter kind 'whitespace' is registered twice" in message
    assert "plugin 'builtin-splitters' of aunet" in message and "plugin 'impostor' (registered in code)" in message


def test_misspelt_hook_is_reported_by_check_pending() -> None:
    registry = Registry()
    registry.register(_plugin("typo", aunet_register_splitter=lambda registry: None), name="typo")
    with pytest.raises(PluginError, match="aunet_register_splitter.*the hooks are aunet_register_splitters"):
        registry.check_pending()


def test_hook_with_wrong_arguments_is_refused() -> None:
    registry = Registry()
    with pytest.raises(PluginError, match="plugin 'bad'.*regstry"):
        registry.register(_plugin("bad", aunet_register_splitters=lambda regstry: None), name="bad")


@pytest.mark.parametrize(
    ("cls", "message"),
    [
        (int, "expects a subclass of Splitter"),
        (type("Plain", (Whitespace,), {"kind": "plain"}), "must be an attrs class"),
        (attrs.frozen(type("NoKind", (Whitespace,), {"kind": "Bad Kind"})), "lowercase letters, digits and hyphens"),
    ],
)
def test_bad_registrations_say_what_is_wrong(cls: type, message: str) -> None:
    registry = Registry()
    with pytest.raises(PluginError, match=message):
        registry.register(_plugin("p", aunet_register_splitters=lambda registry: registry.add_splitter(cls)), name="p")


def test_example_plugin_registered_in_code_works_end_to_end(registry: Registry) -> None:
    sys.path.insert(0, str(EXAMPLE))
    try:
        import aunet_example_splitter as example
    finally:
        sys.path.remove(str(EXAMPLE))
    registry.register(example, name="sentences")
    reg = registry.lookup(Family.SPLITTER, "sentences")
    assert reg.origin.distribution is None
    spec = parse_spec((EXAMPLE / "sentences.toml").read_text(), registry=registry)
    assert not spec.check_splitting()
    levels = spec.splitter_stack().levels("One two. Three!\nFour 。五".encode())
    text = "One two. Three!\nFour 。五".encode()
    ends = [text[: i + 1].decode("utf-8", "replace")[-1] for i, v in enumerate(levels) if v == 2]
    assert ends == [" ", "\n", "。"]
    check_splitter(example.Sentences(), stacks=[[Whitespace(), example.Sentences()]], max_examples=30)


@pytest.fixture(scope="module")
def example_installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example plugin installed (a real wheel, entry points and all) into a private folder."""
    import subprocess

    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(EXAMPLE),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return target


@pytest.mark.slow
def test_installed_example_plugin_is_listed_and_usable(example_installed: Path) -> None:
    env = {"PYTHONPATH": str(example_installed)}
    listing = json.loads(run_cli("plugins", "--json", env=env).stdout)
    kinds = {e["kind"]: e for e in listing["families"]["splitter"]}
    assert kinds["sentences"]["distribution"] == "aunet-example-splitter"
    assert kinds["sentences"]["version"] == "1.0.0" and not kinds["sentences"]["builtin"]
    assert {"whitespace", "word-pair", "4-word"} <= set(kinds)
    result = run_cli(
        "split", "--spec", str(EXAMPLE / "sentences.toml"), "--text", "One. Two! Three?", "--json", env=env
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["splitters"] == ["whitespace", "sentences"]
    assert [i for i, v in enumerate(out["levels"]) if v == 2] == [4, 9]


@pytest.mark.slow
def test_autoload_switch_keeps_builtins_and_drops_third_party(example_installed: Path) -> None:
    env = {"PYTHONPATH": str(example_installed), "AUNET_DISABLE_PLUGIN_AUTOLOAD": "1"}
    kinds = {e["kind"] for e in json.loads(run_cli("plugins", "--json", env=env).stdout)["families"]["splitter"]}
    assert "sentences" not in kinds and "whitespace" in kinds
    env["AUNET_PLUGINS"] = "sentences"
    kinds = {e["kind"] for e in json.loads(run_cli("plugins", "--json", env=env).stdout)["families"]["splitter"]}
    assert "sentences" in kinds
    env["AUNET_PLUGINS"] = "sentencez"
    result = run_cli("plugins", env=env)
    assert result.returncode == 2 and "AUNET_PLUGINS names sentencez" in result.stderr
    assert "Traceback" not in result.stderr


POOLER_EXAMPLE = ROOT / "examples" / "aunet-example-pooler"


@pytest.mark.slow
def test_example_pooler_installs_is_listed_trains_generates_and_passes_its_kit(tmp_path: Path) -> None:
    import subprocess

    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(POOLER_EXAMPLE),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    env = {"PYTHONPATH": str(target)}
    poolers = {e["kind"]: e for e in json.loads(run_cli("plugins", "--json", env=env).stdout)["families"]["pooler"]}
    assert {"select", "mean", "attention", "max"} <= set(poolers)
    assert poolers["max"]["distribution"] == "aunet-example-pooler" and poolers["max"]["version"] == "1.0.0"
    out = tmp_path / "run"
    trained = run_cli("train", "--spec", str(POOLER_EXAMPLE / "max.toml"), "--steps", "2", "--out", str(out), env=env)
    assert trained.returncode == 0, trained.stderr[-2000:]
    assert 'pooler = { kind = "max"' in (out / "spec.toml").read_text()
    generated = run_cli("generate", "--ckpt", str(out), "--prompt", "And God", "--max-bytes", "10", env=env)
    assert generated.returncode == 0 and generated.stdout.startswith("And God"), generated.stderr
    kit = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(POOLER_EXAMPLE / "tests")],
        env={**__import__("os").environ, **env},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert kit.returncode == 0, kit.stdout[-2000:]
