"""Adding a method is one class and a decorator: a method defined in this file runs through
run → compare → report → export without any change to the package, its hyper-parameters are a
config section of its own, and no method or router name is written outside its own module."""

from __future__ import annotations

import ast
import inspect
import json
from dataclasses import dataclass
from pathlib import Path

import pytest

import pearl_cl
from pearl_cl.commands import cli
from pearl_cl.config import RunConfig, load_config
from pearl_cl.core.rank import RankRule
from pearl_cl.errors import ConfigError
from pearl_cl.methods.pearl import Pearl
from pearl_cl.registry import BACKBONES, BENCHMARKS, METHODS, PROBES, ROUTERS, Registry

PACKAGE = Path(pearl_cl.__file__).parent
TINY = ["--set", "backbone.name=mlp", "--set", "backbone.width=0.25", "--set", "data.train_per_task=300",
        "--set", "data.test_per_task=100", "--set", "train.iterations=15", "--set", "train.batch_size=32"]


@dataclass
class ShareConfig:
    """``share`` in (0, 1]: every layer's rank is this share of ``pearl.r_max``, at least 1."""

    share: float = 0.5

    def check(self, config: RunConfig) -> None:
        if not 0 < self.share <= 1:
            raise ConfigError(f"sharerank.share must be in (0, 1], got {self.share}")


class ShareRank(Pearl):
    """PEARL's pipeline with every layer at ``round(share · r_max)``: a new method in 10 lines."""

    config_section = ShareConfig
    chooses_ranks = False

    @classmethod
    def rank_rule(cls, config: RunConfig) -> RankRule:
        rank = max(1, round(config.pearl.r_max * config.sections[cls.name].share))
        return RankRule("fixed", r_min=0, r_max=rank, fixed_rank=rank)


@pytest.fixture
def share_rank():
    """ShareRank registered as ``sharerank`` for the test, unregistered after it."""
    METHODS.register("sharerank")(ShareRank)
    yield ShareRank
    METHODS.remove("sharerank")


@pytest.mark.slow
def test_a_method_defined_outside_the_package_runs_compares_reports_and_exports(share_rank, tmp_path, capsys):
    assert cli.main(["run", "--help-config"]) == 0
    listed = capsys.readouterr().out
    assert "sharerank" in listed and "sharerank.share = 0.5" in listed
    assert cli.main(["run", "--method", "sharerank", "--out", str(tmp_path / "bad"), *TINY, "--set", "sharerank.share=2"]) == 2
    assert "sharerank.share must be in (0, 1], got 2" in capsys.readouterr().err

    run_dir = tmp_path / "run"
    assert cli.main(["run", "--method", "sharerank", "--out", str(run_dir), *TINY, "--set", "pearl.r_max=8",
                     "--set", "sharerank.share=0.25"]) == 0, capsys.readouterr().err
    ranks = [line.split(",") for line in (run_dir / "ranks.csv").read_text().splitlines()[1:]]
    assert ranks and {int(row[5]) for row in ranks} == {2}  # round(0.25 · 8) on every layer of every later task
    assert "sharerank:\n  share: 0.25" in (run_dir / "config.yaml").read_text()

    cmp_dir = tmp_path / "cmp"
    assert cli.main(["compare", "--methods", "finetune,sharerank", "--seeds", "1", "--out", str(cmp_dir), *TINY]) == 0
    rows = json.loads((cmp_dir / "compare.json").read_text())["methods"]
    assert [r["method"] for r in rows] == ["finetune", "sharerank"] and rows[1]["params_added_mean"] > 0
    assert "sharerank" in (cmp_dir / "report.md").read_text()
    capsys.readouterr()

    assert cli.main(["report", str(run_dir), "--out", str(tmp_path / "report")]) == 0
    assert "sharerank" in (tmp_path / "report" / "report.md").read_text()

    assert cli.main(["export", str(run_dir), "--task", "2", "--out", str(tmp_path / "export")]) == 0
    exported = json.loads((tmp_path / "export" / "export.json").read_text())
    assert exported["method"] == "sharerank" and (tmp_path / "export" / "adapter_config.json").is_file()
    adapter = json.loads((tmp_path / "export" / "adapter_config.json").read_text())
    assert set(adapter["rank_pattern"].values()) == {2}


@pytest.mark.slow
def test_a_method_without_adapters_cannot_be_exported(tmp_path, capsys):
    assert cli.main(["run", "--method", "finetune", "--out", str(tmp_path / "run"), *TINY,
                     "--set", "data.train_per_task=100", "--set", "train.iterations=2"]) == 0
    assert cli.main(["export", str(tmp_path / "run"), "--task", "2", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "is a finetune run; only runs of" in err and "pearl" in err and not (tmp_path / "x").exists()


def test_registry_names_its_choices_and_refuses_a_second_owner():
    registry: Registry = Registry("widget", "widget.name")
    registry.register("a", default=True)(type("A", (), {}))
    with pytest.raises(ValueError, match="widget 'a' is registered twice"):
        registry.register("a")(type("B", (), {}))
    with pytest.raises(ConfigError, match="unknown widget.name 'b'; choose one of: a"):
        registry.get("b")
    assert registry.default() == "a" and registry["a"].name == "a"


def test_every_registry_fills_itself_and_the_config_defaults_come_from_it():
    assert {"pearl", "lora", "finetune", "joint", "ewc", "si", "lwf", "separate"} <= set(METHODS.names())
    assert {"mahalanobis", "reference", "energy", "max_prob", "entropy", "oracle"} <= set(ROUTERS.names())
    assert "resnet18" in BACKBONES and "split-mnist" in BENCHMARKS and "finetune" in PROBES
    config = RunConfig()
    assert (config.method, config.routing.router, config.backbone.name) == (METHODS.default(), ROUTERS.default(),
                                                                             BACKBONES.default())


def test_an_ewc_run_of_version_0_3_reads_as_online_ewc(tmp_path):
    """Method ``ewc`` was online EWC (its section had ``gamma``) until EWC and online EWC were split."""
    old = tmp_path / "config.yaml"
    old.write_text("method: ewc\newc:\n  lambda: 3.0\n  gamma: 0.7\n  fisher_samples: null\n")
    config = load_config(old)
    assert (config.method, config.sections["online-ewc"].lambda_, config.sections["online-ewc"].gamma) == ("online-ewc", 3.0, 0.7)
    assert config.ewc.lambda_ == 1e7


def test_config_files_of_version_0_1_map_their_keys(tmp_path):
    old = tmp_path / "config.yaml"
    old.write_text("pearl:\n  fixed_rank: 3\nbaselines:\n  ewc_lambda: 5.0\n  si_c: 2.0\n  lwf_alpha: 0.5\n")
    config = load_config(old)
    assert (config.lora.rank, config.sections["online-ewc"].lambda_, config.si.c, config.lwf.alpha) == (3, 5.0, 2.0, 0.5)
    with pytest.raises(ConfigError, match="unknown config key 'ewc.lamda'; did you mean 'ewc.lambda'"):
        load_config(None, ["ewc.lamda=1"])


# Literals that equal a method or router name but name something else; each is checked to exist,
# so the list cannot go stale.
OTHER_MEANINGS = {
    ("core/probe.py", "finetune"): "the finetune probe",
    ("methods/pearl.py", "finetune"): "pearl.probe's default, the finetune probe",
    ("core/rank.py", "energy"): "the energy rank rule",
    ("methods/pearl.py", "reference"): "the reference task's fit",
    ("methods/record.py", "reference"): "TaskRecord's reference flag",
    ("engine/outputs.py", "reference"): "tasks.csv's reference column",
    ("commands/report.py", "reference"): "the reference task's row",
}


def test_no_method_or_router_name_is_written_outside_its_own_module():
    owners: dict[str, set[Path]] = {}
    for registry in (METHODS, ROUTERS):
        for name, entry in registry.items():
            owners.setdefault(name, set()).add(Path(inspect.getfile(entry)).resolve())
    found, other = [], set()
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in owners and path.resolve() not in owners[node.value]:
                if (relative, node.value) in OTHER_MEANINGS:
                    other.add((relative, node.value))
                else:
                    found.append(f"{relative}:{node.lineno} {node.value!r}")
    assert found == []
    assert other == set(OTHER_MEANINGS)
