"""Config loading: grid expansion, path resolution, and errors that name file, line and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from biobench import config
from biobench.config import Model
from biobench.errors import ConfigError


def test_grid_is_cartesian_product_of_models_and_list_keys(config_file, newt_dir):
    path = config_file(
        f"""
        n_train = [1, 3, -1]
        seeds = [0, 7]
        batch_size = 16

        [[models]]
        org = "builtin"
        ckpt = "pixel-stats"

        [[models]]
        org = "timm"
        ckpt = "resnet18"
        pretrained = false

        [data]
        newt = "{newt_dir}"
        """
    )
    cfg = config.load(path)
    assert len(cfg.experiments) == 2 * 3 * 2
    combos = {(e.model.name, e.n_train, e.seed) for e in cfg.experiments}
    assert ("timm:resnet18#random-init", -1, 7) in combos and ("builtin:pixel-stats", 1, 0) in combos
    assert {e.model for e in cfg.experiments} == {Model("builtin", "pixel-stats"), Model("timm", "resnet18", pretrained=False)}
    assert cfg.settings.batch_size == 16
    assert cfg.data == {"newt": newt_dir}


def test_scalar_axis_and_defaults(config_file):
    cfg = config.load(
        config_file(
            """
            n_train = 5
            seed = 3
            [[models]]
            org = "builtin"
            ckpt = "pixel-stats"
            """
        )
    )
    assert [(e.n_train, e.seed) for e in cfg.experiments] == [(5, 3)]
    assert cfg.data == {}


def test_relative_paths_resolve_against_config_dir(tmp_path, newt_dir):
    sub = tmp_path / "configs"
    sub.mkdir()
    (sub / "data").symlink_to(newt_dir)
    path = sub / "c.toml"
    path.write_text('report_to = "out"\ncache_dir = "cache"\n[[models]]\norg = "builtin"\nckpt = "pixel-stats"\n[data]\nnewt = "data"\n')
    cfg = config.load(path)
    assert cfg.settings.report_to == sub / "out"
    assert cfg.settings.db_path == sub / "out" / "results.sqlite"
    assert cfg.settings.cache_dir == sub / "cache"
    assert cfg.data["newt"] == sub / "data"


def test_default_report_to_is_next_to_config_and_cache_from_env(config_file, monkeypatch, tmp_path):
    monkeypatch.setenv("BIOBENCH_CACHE", str(tmp_path / "envcache"))
    path = config_file('[[models]]\norg = "builtin"\nckpt = "pixel-stats"\n')
    cfg = config.load(path)
    assert cfg.settings.report_to == path.parent / "results"
    assert cfg.settings.resolved_cache_dir() == tmp_path / "envcache"


def test_task_options_are_validated(config_file, newt_dir):
    cfg = config.load(
        config_file(
            f"""
            [[models]]
            org = "builtin"
            ckpt = "pixel-stats"
            [data]
            newt = "{newt_dir}"
            [newt]
            include_clusters = ["appearance"]
            exclude_tasks = ["ml_age_bald_eagle"]
            """
        )
    )
    task_cfg = cfg.task_options_for("newt")
    assert task_cfg.include_clusters == ("appearance",)
    assert task_cfg.exclude_tasks == ("ml_age_bald_eagle",)
    assert task_cfg.data == newt_dir


def error_of(config_file, body: str) -> str:
    with pytest.raises(ConfigError) as info:
        config.load(config_file(body))
    return str(info.value)


def test_malformed_toml_names_file_and_line(config_file):
    msg = error_of(config_file, '[[models]]\norg = "builtin"\nckpt = pixel-stats\n')
    assert "config.toml" in msg and "line 3" in msg


def test_unknown_top_level_key_names_file_line_and_suggestion(config_file):
    msg = error_of(config_file, 'n_trian = [1]\n[[models]]\norg = "builtin"\nckpt = "pixel-stats"\n')
    assert "config.toml:1" in msg and "'n_trian'" in msg and "n_train" in msg


def test_wrong_type_names_key(config_file):
    msg = error_of(config_file, 'batch_size = "big"\n[[models]]\norg = "builtin"\nckpt = "pixel-stats"\n')
    assert "batch_size" in msg and "integer" in msg and "config.toml:1" in msg


def test_run_wide_setting_cannot_be_a_grid_axis(config_file):
    msg = error_of(config_file, 'device = ["cpu", "cuda"]\n[[models]]\norg = "builtin"\nckpt = "pixel-stats"\n')
    assert "device" in msg and "cannot be a list" in msg


def test_bad_n_train_values(config_file):
    msg = error_of(config_file, 'n_train = [0]\n[[models]]\norg = "builtin"\nckpt = "pixel-stats"\n')
    assert "n_train" in msg


def test_seed_and_seeds_conflict(config_file):
    msg = error_of(config_file, 'seed = 1\nseeds = [2]\n[[models]]\norg = "builtin"\nckpt = "pixel-stats"\n')
    assert "seed" in msg


def test_model_table_errors(config_file):
    assert "ckpt" in error_of(config_file, '[[models]]\norg = "builtin"\n')
    msg = error_of(config_file, '[[models]]\norg = "builtin"\nckpt = "x"\nmethd = "cvml"\n')
    assert "methd" in msg and "method" in msg and "config.toml:4" in msg
    assert "mllm" in error_of(config_file, '[[models]]\norg = "builtin"\nckpt = "x"\nmethod = "llm"\n')
    assert "[[models]]" in error_of(config_file, "n_train = 1\n")


def test_missing_data_dir_names_task_path_and_fix(config_file, tmp_path):
    msg = error_of(config_file, '[[models]]\norg = "builtin"\nckpt = "pixel-stats"\n[data]\nnewt = "nowhere"\n')
    assert "newt" in msg and str(tmp_path / "nowhere") in msg
    assert "biobench download newt" in msg and "biobench fixture newt" in msg
    assert "config.toml:5" in msg


def test_empty_data_entry_skips_task(config_file):
    cfg = config.load(config_file('[[models]]\norg = "builtin"\nckpt = "pixel-stats"\n[data]\nnewt = ""\n'))
    assert cfg.data == {}


def test_unknown_task_in_data_and_unknown_task_option(config_file, newt_dir):
    msg = error_of(config_file, f'[[models]]\norg = "builtin"\nckpt = "pixel-stats"\n[data]\nnewtt = "{newt_dir}"\n')
    assert "newtt" in msg and "newt" in msg
    msg = error_of(config_file, '[[models]]\norg = "builtin"\nckpt = "pixel-stats"\n[newt]\nclusters = ["a"]\n')
    assert "clusters" in msg and "include_clusters" in msg


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        config.load(tmp_path / "nope.toml")


def test_model_parse():
    assert Model.parse("open-clip:hf-hub:imageomics/bioclip") == Model("open-clip", "hf-hub:imageomics/bioclip")
    with pytest.raises(ConfigError, match="ORG:CKPT"):
        Model.parse("pixel-stats")


def test_config_dataclasses_document_every_field():
    import ast
    import inspect

    from biobench import download, examples, metrics, probes
    from biobench.mllm.settings import MllmSettings
    from biobench.tasks import get_task, task_names
    from biobench.tasks.spec import TaskSpec

    probe_classes = [c for c in vars(probes).values() if isinstance(c, type) and issubclass(c, probes.Probe)]
    task_options = [get_task(n).options for n in task_names()]
    others = (MllmSettings, TaskSpec, examples.Examples, metrics.Metric, probes.Predictions, download.Resource)
    for cls in (config.Model, config.Experiment, config.Settings, config.Config, *others, *probe_classes, *task_options):
        source = inspect.getsource(cls)
        tree = ast.parse(source)
        body = tree.body[0].body
        for i, node in enumerate(body):
            if isinstance(node, ast.AnnAssign) and not ast.unparse(node.annotation).startswith("ClassVar"):  # fields, not class constants
                nxt = body[i + 1] if i + 1 < len(body) else None
                assert isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant), (
                    f"{cls.__name__}.{node.target.id} has no docstring"
                )
    assert Path(config.__file__).exists()


def test_readme_documents_every_setting_and_the_two_setup_commands():
    import dataclasses

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    for f in dataclasses.fields(config.Settings):
        assert f"`{f.name}`" in readme, f"README's config reference lacks {f.name}"
    quickstart = readme.split("## Quickstart", 1)[1].split("##", 1)[0]
    commands = [line.split("#")[0].strip() for line in quickstart.split("```sh", 1)[1].split("```", 1)[0].splitlines() if line.strip()]
    assert commands == ["make demo", "make test"]


def test_repeated_grid_points_run_once_and_random_init_is_its_own_model(config_file, newt_dir):
    from biobench import runner

    cfg = config.load(
        config_file(
            f"""
            n_train = [4, 4]
            [[models]]
            org = "timm"
            ckpt = "resnet18"
            [[models]]
            org = "timm"
            ckpt = "resnet18"
            [[models]]
            org = "timm"
            ckpt = "resnet18"
            pretrained = false
            [data]
            newt = "{newt_dir}"
            """
        )
    )
    assert len(cfg.experiments) == 2
    keys = [p.key for p in runner.plan(cfg) if p.task == "newt"]
    assert len(set(keys)) == 2 and {k.model for k in keys} == {"timm:resnet18", "timm:resnet18#random-init"}
