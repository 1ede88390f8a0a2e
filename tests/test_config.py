"""One config discipline: the typed key=value parser, nested recipes, field metadata for result validity."""

from __future__ import annotations

import dataclasses

import pytest

from gahb.utils.config import (added, apply_overrides, before_values, flat, from_dict, parse_spec, parse_value, runtime,
                               runtime_fields, same_result_config)


@dataclasses.dataclass(frozen=True)
class Inner:
    epochs: int | None = 4
    lr: float = added(1e-3, before=1e-3)


@dataclasses.dataclass(frozen=True)
class Outer:
    name: str = "calpha"
    flag: bool = False
    window: tuple = (10.0, 26.0)
    halve: float | None = 1
    model: object = "unet-small"
    train: Inner = Inner()
    threads: int | None = runtime(None)


def test_values_are_typed_by_the_field_they_set():
    assert parse_value("yes", False) is True and parse_value("0", True) is False
    with pytest.raises(ValueError, match="not a bool"):
        parse_value("maybe", False)
    assert parse_value("3", 1) == 3
    with pytest.raises(ValueError, match="not an int"):
        parse_value("2.5", 1)
    assert parse_value("1e-3", 0.1) == 1e-3 and isinstance(parse_value("2", 0.5), float)
    assert parse_value("0.5", 1, "float | None") == 0.5  # an int default of a float field
    assert parse_value("none", 1, "float | None") is None and parse_value("none", "x", "str") == "none"
    assert parse_value("[1, 2]", (0,)) == (1, 2) and parse_value("40x80", (0, 0)) == (40, 80)
    assert parse_value('{"width": 8}', "unet-small", "object") == {"width": 8}
    assert parse_value("unet-tiny", "unet-small", "object") == "unet-tiny"
    # inferred (no field): the synthetic dataset specs
    assert [parse_value(t) for t in ("none", "off", "3", "2.5", "24x32", "paper")] == [None, False, 3, 2.5, (24, 32), "paper"]


def test_one_spec_syntax():
    assert parse_spec("calpha:alpha=2,size=24x32") == ("calpha", {"alpha": 2, "size": (24, 32)})
    fields = {"beta": (0.1, "float")}
    assert parse_spec("paper:beta=0.2", fields) == ("paper", {"beta": 0.2})
    for bad, msg in (("paper:beta", "KEY=VALUE"), ("paper:gamma=1", "unknown option"), ("paper:beta=x", "not a float"),
                     ("paper:beta=1,beta=2", "twice")):
        with pytest.raises(ValueError, match=msg):
            parse_spec(bad, fields)


def test_overrides_reach_the_nested_recipe_and_unknown_keys_fail():
    cfg = apply_overrides(Outer(), ["epochs=7", "train.lr=5e-4", "halve=0.5", "flag=true", "window=[6, 20]"])
    assert cfg.train == Inner(epochs=7, lr=5e-4) and cfg.halve == 0.5 and cfg.flag and cfg.window == (6, 20)
    assert apply_overrides(Outer(), {"lr": 0.01}).train.lr == 0.01
    with pytest.raises(ValueError, match="unknown setting 'nope'.*epochs"):
        apply_overrides(Outer(), ["nope=1"])
    with pytest.raises(ValueError, match="--set epochs=x: 'x' is not an int"):
        apply_overrides(Outer(), ["epochs=x"])


def test_configs_come_back_from_json_flat_or_nested():
    cfg = apply_overrides(Outer(), ["epochs=2", "window=[1, 2]"])
    d = {"name": "calpha", "flag": False, "window": [1, 2], "halve": 1, "model": "unet-small",
         "train": {"epochs": 2, "lr": 1e-3}, "threads": None}
    assert from_dict(Outer, d) == cfg
    assert from_dict(Outer, flat(d)) == cfg  # results written before the recipe was nested
    assert from_dict(Outer, {**d, "gone": 1}) == cfg


def test_runtime_fields_never_invalidate_and_added_fields_keep_older_results_only_at_their_old_value():
    assert runtime_fields(Outer) == {"threads"} and before_values(Outer) == {"lr": 1e-3}
    old = {"name": "calpha", "epochs": 4, "threads": 1}  # flat, before lr existed
    new = dataclasses.asdict(Outer(threads=2))
    ignore, before = runtime_fields(Outer), before_values(Outer)
    assert same_result_config(old, {**new, "train": {"epochs": 4, "lr": 1e-3}}, ignore=ignore, before=before)
    assert not same_result_config(old, {**new, "train": {"epochs": 4, "lr": 5e-4}}, ignore=ignore, before=before)
    assert not same_result_config(old, {**new, "train": {"epochs": 5, "lr": 1e-3}}, ignore=ignore, before=before)
    assert not same_result_config(old, {**new, "train": {"epochs": 4, "lr": 1e-3}}, before=before)  # threads compared
    assert not same_result_config({**old, "gone": 1}, new, ignore=ignore, before=before)
    assert not same_result_config(None, new)


def test_configs_are_frozen_and_the_training_runtime_fields_are_marked():
    from gahb.models import ModelConfig
    from gahb.studies import STUDIES, get_study
    from gahb.training.config import RUNTIME_FIELDS, TrainConfig

    with pytest.raises(dataclasses.FrozenInstanceError):
        TrainConfig().lr = 1.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        ModelConfig().width = 8
    assert RUNTIME_FIELDS == {"device", "checkpoint_every", "channels_last", "compile"}
    for name in STUDIES:
        mod = get_study(name)
        assert {"threads"} <= runtime_fields(mod.Config) <= {"threads", "runs_dir", "cache_dir", "executor"}, name
        for preset in mod.PRESETS.values():
            assert dataclasses.is_dataclass(preset) and mod.Config.__dataclass_params__.frozen


def test_the_recipe_budget():
    from gahb.training.recipe import Recipe

    r = Recipe(steps=1000, images_per_epoch=16_000, min_epochs=4)
    assert r.budget(10_000) == (1000, 16_000) and r.budget(34_475) == (2155, round(16_000 * 2155 / 1000))
    assert Recipe(epochs=4).budget(300) == (None, 300)  # one pass over the N images per epoch
    tc = Recipe(epochs=2, lr_halve_every=None, sigma_max=0.4).train_config(500, seed=3, device="cpu")
    assert (tc.epochs, tc.steps, tc.images_per_epoch, tc.lr_halve_every, tc.sigma_max, tc.seed) == (2, None, 500, None, 0.4, 3)
    with pytest.raises(ValueError, match="epochs or steps"):
        Recipe(epochs=None)
