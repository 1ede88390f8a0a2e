"""The transition study end to end at its test preset, on a tiny pool (the ``tiny_pool`` fixture)."""

from __future__ import annotations

import json

import pytest

from gahb.cli import main as cli_main
from gahb.studies import get_config, get_study
from gahb.studies.common import RESULT_KEYS, first_nonfinite


def test_transition_test_preset_end_to_end(tiny_pool, tmp_path):
    dataset, cache = tiny_pool
    cfg = get_config("transition", "test", {"dataset": dataset, "cache_dir": cache, "ns": (1, 4, "max")})
    out = tmp_path / "out"
    res = get_study("transition").run(cfg, out, progress=False, preset="test")
    assert set(RESULT_KEYS) <= set(res)
    saved = json.loads((out / "results.json").read_text())
    assert saved["numbers"]["ns"] == res["numbers"]["ns"]
    ns = res["numbers"]["ns"]
    assert ns[0] == 1 and ns[-1] == res["numbers"]["max_n"] and len(ns) == 3
    assert first_nonfinite(res["numbers"]) is None
    for fig in res["figures"]:
        assert (out / fig["path"]).stat().st_size > 1000
    names = [c["name"] for c in res["claims"]]
    assert any("copies" in n for n in names) and any("gap" in n for n in names)
    # an npy pool has no class labels: the sample quality says so instead of a number
    assert "no class labels" in res["numbers"]["quality"]["unavailable"]
    assert "sample quality: not measured" in names
    per_n = res["numbers"]["per_n"][str(ns[0])]
    curve = per_n["subsets"]["s1"]["curves"]["train"]
    assert len(curve["output_psnr"]) == len(cfg.input_psnrs)
    # The two networks of one N were trained on disjoint sets, from different initialisations.
    runs = res["numbers"]["runs"][str(ns[-1])]
    c1 = json.loads((tmp_path / "out" / "runs" / f"N{ns[-1]}_s1" / "config.json").read_text())
    c2 = json.loads((tmp_path / "out" / "runs" / f"N{ns[-1]}_s2" / "config.json").read_text())
    assert runs["s1"] != runs["s2"]
    assert c1["train"]["seed"] != c2["train"]["seed"]
    assert (c1["subset"], c2["subset"]) == ("s1", "s2") and c1["data_fingerprint"] != c2["data_fingerprint"]

    # Running again reuses every trained network and measurement: same numbers.
    again = get_study("transition").run(cfg, out, progress=False, preset="test")
    assert again["numbers"]["psnr_gap_db"] == res["numbers"]["psnr_gap_db"]
    assert again["numbers"]["median_paired_cosine"] == res["numbers"]["median_paired_cosine"]


def test_transition_rejects_n_above_the_disjoint_half(tiny_pool, tmp_path):
    dataset, cache = tiny_pool
    cfg = get_config("transition", "test", {"dataset": dataset, "cache_dir": cache, "ns": (1, 10_000)})
    with pytest.raises(ValueError, match="exceeds the largest disjoint half"):
        get_study("transition").run(cfg, tmp_path / "o", progress=False)


def test_study_cli_show_config_and_bad_setting(tiny_pool, capsys):
    dataset, _ = tiny_pool
    assert cli_main(["study", "transition", "--preset", "test", "--dataset", dataset, "--show-config"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["dataset"] == dataset and shown["train"]["model"] == "unet-tiny"  # the training recipe, nested
    assert cli_main(["study", "transition", "--preset", "test", "--set", "no_such_field=1"]) == 1
    assert "unknown setting" in capsys.readouterr().err


def test_min_epochs_raises_large_n_budgets_and_keeps_small_n_measurements():
    from gahb.studies.transition import Config, _budget, _measure_config, _train_config
    from gahb.training.recipe import Recipe

    cfg = Config(train=Recipe(steps=1000, images_per_epoch=16_000, batch_size=64, min_epochs=4))
    assert _budget(cfg, 10_000) == (1000, 16_000)  # 4 passes = 625 steps: the floor of 1000 holds
    steps, ipe = _budget(cfg, 34_475)
    assert steps == 2155 and steps * 64 >= 4 * 34_475
    assert ipe / 64 == pytest.approx(steps / 4, rel=1e-3)  # still 4 epochs: halvings at the same quarters
    tc = _train_config(cfg, "s1", 34_475)
    assert (tc.steps, tc.images_per_epoch) == (2155, ipe)
    # Measurements of N whose budget min_epochs leaves alone keep the key they had without it.
    plain = Config(train=Recipe(steps=1000, images_per_epoch=16_000, batch_size=64))
    assert _measure_config(cfg, 10_000) == _measure_config(plain, 10_000)
    assert _measure_config(cfg, 34_475) != _measure_config(plain, 34_475)
    assert _budget(Config(), 34_475) == (None, Config().train.images_per_epoch)  # tiled epochs: untouched


def test_the_claims_are_a_function_of_results_json_alone(tmp_path):
    """Re-judging a finished study from its results.json gives the claims the run wrote."""
    import json

    from gahb.studies import get_config
    from gahb.studies._transition_claims import judge
    from gahb.studies.transition import run

    res = run(get_config("transition", "test"), tmp_path, progress=False, preset="test")
    stored = json.loads((tmp_path / "results.json").read_text())
    assert judge(stored) == res["claims"]
    _check_quality(res, tmp_path, run)


def _check_quality(res, out, run):
    """The test preset measures the sample quality (tiny classifier) of every N; a per-N cache written
    before the quality existed keeps its numbers and only the quality is computed, identically."""
    import copy

    from gahb.studies import get_config
    from gahb.studies._transition_claims import judge

    q = res["numbers"]["quality"]
    ns = res["numbers"]["ns"]
    assert sorted(q["per_n"], key=int) == [str(n) for n in ns] and q["set_size"] == 8
    assert q["classifier"]["features"] <= 64 and set(q["references"]) >= {"floor", "blur_light", "blur_heavy", "noise"}
    for n in ns:
        for s in ("s1", "s2"):
            v = q["per_n"][str(n)][s]
            assert v["n"] == v["samples"] - v["failed"] and v["frechet"]["lo"] <= v["frechet"]["estimate"] <= v["frechet"]["hi"]
    names = [c["name"] for c in res["claims"]]
    assert any(n.startswith(f"N = {ns[-1]}: the samples score like new real images") for n in names)
    assert any(n.startswith("sample quality: the Frechet distance ranks") for n in names)
    off = copy.deepcopy(json.loads((out / "results.json").read_text()))
    off["numbers"]["quality"] = None  # results without the quality: no quality rows
    assert not any("quality" in c["name"] or "Frechet" in c["name"] for c in judge(off))

    stamps = {p.name: p.stat().st_mtime_ns for p in (out / "per_n").glob("N*.json") if "quality" not in p.name}
    for p in (out / "per_n").glob("N*_quality.json"):
        p.unlink()
    again = run(get_config("transition", "test"), out, progress=False, preset="test")
    assert {p.name: p.stat().st_mtime_ns for p in (out / "per_n").glob("N*.json") if "quality" not in p.name} == stamps
    per_net = {n: {s: v[s] for s in ("s1", "s2")} for n, v in q["per_n"].items()}
    assert {n: {s: v[s] for s in ("s1", "s2")} for n, v in again["numbers"]["quality"]["per_n"].items()} == per_net


def test_quality_setting_is_checked_and_kept_out_of_the_measurement_key():
    from gahb.studies.transition import LEGACY_VALUES, Config, _measure_config

    with pytest.raises(ValueError, match="quality must be"):
        Config(quality="huge").validate()
    assert _measure_config(Config(quality="off"), 10) == _measure_config(Config(), 10)
    assert LEGACY_VALUES["quality"] == "off"  # results from before the quality are reused only without it
