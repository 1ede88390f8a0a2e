"""`gahb reproduce`: every section in the report and the JSON, failures shown, reuse, a self-contained page.

The end-to-end test runs the real study modules at their tiny ``test`` presets (a study not yet in
the tree is stood in for by a fake that honours the study contract), so it checks the whole chain:
transition -> Jacobian/GAHB on its trained runs -> C^alpha -> manifold -> shuffled -> report.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import math
import re
import types
from pathlib import Path

import pytest

from gahb.studies import common
from gahb.studies import reproduce as rp


TEST_SECTIONS = [s.name for s in rp.preset_sections("test")]


# -- a fake study honouring the contract ------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class FakeConfig:
    value: float = 1.0
    transition_dir: str | None = None  # what reproduce hands the Jacobian section
    device: str = "cpu"
    threads: int | None = None


def fake_study(name: str, calls: list | None = None, fail: bool = False):
    def run(config, out_dir, *, progress=True, preset=None):
        import time

        from gahb.report.figures import pyplot, save_figure

        if calls is not None:
            calls.append(name)
        if fail:
            raise RuntimeError(f"{name} <broke> on purpose")
        started = time.time()
        out = Path(out_dir)
        plt = pyplot()
        fig, ax = plt.subplots(figsize=(2, 1.5))
        ax.plot([0, 1], [0, config.value])
        save_figure(fig, out / "figures" / "line.png")
        plt.close(fig)
        claims = [common.claim(f"{name} claim <b>", "paper says 1", config.value, config.value > 0, "> 0"),
                  common.claim(f"{name} info", "n/a", [1.0, 2.0], None)]
        return common.finish(out, name, preset, config, claims, {"value": config.value, "nested": {"x": [1.5]}},
                             [{"path": "figures/line.png", "caption": f"fake {name} figure"}], started)

    return types.SimpleNamespace(PRESETS={p: FakeConfig() for p in ("test", "quick", "standard", "paper")}, run=run)


def use_fakes(monkeypatch, fakes: dict):
    real = rp.load_section_module

    def load(section):
        if section.name in fakes:
            return fakes[section.name]
        return real(section)

    monkeypatch.setattr(rp, "load_section_module", load)


def _module_exists(section) -> bool:
    try:
        rp.load_section_module(section)
        return True
    except ModuleNotFoundError:
        return False


def _finite(obj, where="") -> list[str]:
    if isinstance(obj, float) and not math.isfinite(obj):
        return [where]
    if isinstance(obj, dict):
        return [p for k, v in obj.items() for p in _finite(v, f"{where}.{k}")]
    if isinstance(obj, (list, tuple)):
        return [p for i, v in enumerate(obj) for p in _finite(v, f"{where}[{i}]")]
    return []


def check_report(out: Path, expect_failed=()):
    doc = json.loads((out / "reproduce.json").read_text())
    page = (out / "report.html").read_text()
    assert set(doc) == {"meta", "sections", "claims", "summary"}
    for key in ("preset", "scale", "git_revision", "versions", "device", "machine", "date", "wall_time_s", "command"):
        assert key in doc["meta"], key
    assert [e["section"] for e in doc["sections"]] == [s.name for s in rp.preset_sections(doc["meta"]["preset"])]
    assert _finite(doc) == []
    for e in doc["sections"]:
        assert e["title"] in page or e["title"].replace("^", "^") in page
        assert f'id="sec-{e["section"]}"' in page
        if e["section"] in expect_failed:
            assert e["status"] == "failed" and e["results"] is None and e["error"]
            continue
        if e["section"] in rp.EXTERNAL_INPUTS and e["status"] == "missing":
            # a section that needs outside files and was not given them: not run, and says why
            assert e["results"] is None and "needs --published-weights" in e["error"]
            continue
        assert e["status"] in ("ok", "reused"), (e["section"], e["error"])
        res = e["results"]
        assert set(common.RESULT_KEYS) <= set(res)
        assert res["claims"] and res["figures"], e["section"]
        for c in res["claims"]:
            assert set(c) >= {"name", "paper", "measured", "target", "passed", "detail"}
        assert e["command"]
        for f in res["figures"]:
            assert (Path(e["out_dir"]) / f["path"]).is_file()
    assert len(doc["claims"]) == sum(len(e["results"]["claims"]) for e in doc["sections"] if e["results"])
    assert all(c["command"] for c in doc["claims"])
    # self-contained: every image inline, nothing fetched from anywhere
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:|//)""", page, re.I)
    assert "<script" not in page.lower().replace("&lt;script", "")
    imgs = re.findall(r'<img src="([^"]{0,30})', page)
    n_figs = sum(len(e["results"]["figures"]) for e in doc["sections"] if e["results"])
    assert len(imgs) == n_figs and all(i.startswith("data:image/png;base64,") for i in imgs)
    return doc, page


# -- tests --------------------------------------------------------------------------------------------
def test_reproduce_test_preset_end_to_end(tmp_path, monkeypatch, one_thread):
    """Real studies (fakes only for those not yet written) at the tiny test preset, through the CLI."""
    from gahb.cli import main

    missing = {s.name: fake_study(s.name) for s in rp.SECTIONS if not _module_exists(s)}
    use_fakes(monkeypatch, missing)
    out = tmp_path / "rep"
    rc = main(["reproduce", "--preset", "test", "--out", str(out), "--threads", "1", "--quiet"])
    assert rc == 0
    doc, page = check_report(out)
    gahb = next(e for e in doc["sections"] if e["section"] == "gahb")
    if "gahb" not in missing and "transition" not in missing:
        # the Jacobian section analysed the transition study's own smallest and largest N
        runs = next(e for e in doc["sections"] if e["section"] == "transition")["results"]["numbers"]["runs"]
        ns = sorted(runs, key=int)
        got = [m["run_dir"] for m in gahb["results"]["numbers"]["models"]]
        assert got == [runs[ns[0]]["s1"], runs[ns[-1]]["s1"]]
        ident = next(c for c in gahb["results"]["claims"] if "bias-free" in c["name"])
        assert ident["passed"] is True and ident["measured"] < 1e-4
    assert "Preset <code>test</code>" in page and doc["meta"]["scale"] in page.replace("&#x27;", "'")
    # every judged row of the real studies names its reference or its uncertainty
    assert doc["summary"]["claims_without_reference_or_uncertainty"] == []
    assert "<th>uncertainty</th>" in page

    # `gahb report` re-judges from the results files alone: claims wiped from a section's results.json
    # come back as they were, and the page is rendered again (a moved copy re-judges its own files)
    moved = tmp_path / "moved"
    import shutil

    shutil.copytree(out, moved)
    path = moved / "calpha" / "results.json"
    res = json.loads(path.read_text())
    before = res["claims"]
    path.write_text(json.dumps({**res, "claims": []}))
    (moved / "report.html").unlink()
    assert main(["report", str(moved)]) == 0
    again = json.loads(path.read_text())
    assert [{k: v for k, v in c.items() if k != "standard"} for c in again["claims"]] == before
    assert (moved / "report.html").is_file() and "rejudged" in json.loads((moved / "reproduce.json").read_text())["meta"]
    assert json.loads((out / "calpha" / "results.json").read_text())["claims"] == before  # the original untouched


def test_failing_section_is_reported_and_others_run(tmp_path, monkeypatch):
    from gahb.cli import main

    calls: list = []
    fakes = {s.name: fake_study(s.name, calls, fail=(s.name == "calpha")) for s in rp.SECTIONS}
    use_fakes(monkeypatch, fakes)
    out = tmp_path / "rep"
    rc = main(["reproduce", "--preset", "test", "--out", str(out), "--quiet"])
    assert rc == 1
    assert calls == TEST_SECTIONS  # the sections after the failure still ran
    doc, page = check_report(out, expect_failed=("calpha",))
    assert doc["summary"]["failed_sections"] == ["calpha"]
    assert "RuntimeError: calpha &lt;broke&gt; on purpose" in page  # shown, and escaped
    assert "calpha <broke>" not in page
    assert "it failed" in page


def test_the_executor_reaches_the_studies_that_take_it_and_a_bad_one_stops_before_any_work(tmp_path, monkeypatch):
    @dataclasses.dataclass(frozen=True)
    class SweepingConfig(FakeConfig):
        executor: str = "inline"

    seen: dict = {}

    def recording(name, cls):
        fake = fake_study(name)
        real_run = fake.run

        def run(config, out_dir, **kw):
            seen[name] = getattr(config, "executor", None)
            return real_run(config, out_dir, **kw)

        return types.SimpleNamespace(PRESETS={p: cls() for p in fake.PRESETS}, run=run)

    fakes = {s.name: recording(s.name, SweepingConfig if s.name == "transition" else FakeConfig) for s in rp.SECTIONS}
    use_fakes(monkeypatch, fakes)
    with pytest.raises(ValueError, match="executor must be one of"):
        rp.reproduce("test", tmp_path / "bad", executor="pbs", progress=False, log=lambda m: None)
    assert not (tmp_path / "bad").exists()
    doc = rp.reproduce("test", tmp_path / "rep", executor="local:max_parallel=2", progress=False, log=lambda m: None)
    assert seen.pop("transition") == "local:max_parallel=2" and set(seen.values()) == {None}
    [entry] = [e for e in doc["sections"] if e["section"] == "transition"]
    assert "--executor local:max_parallel=2" in entry["command"]


def test_finished_sections_are_reused_unless_config_or_upstream_changed(tmp_path, monkeypatch):
    calls: list = []
    fakes = {s.name: fake_study(s.name, calls) for s in rp.SECTIONS}
    use_fakes(monkeypatch, fakes)
    out = tmp_path / "rep"
    rp.reproduce("test", out, progress=False, log=lambda m: None)
    assert calls == TEST_SECTIONS
    calls.clear()
    doc = rp.reproduce("test", out, progress=False, log=lambda m: None)
    assert calls == [] and {e["status"] for e in doc["sections"]} == {"reused"}
    # a different configuration of one section recomputes it (and the Jacobian section after the
    # transition section, which reads its trained networks)
    changed = {"transition": (("value", 2.0),), "manifold": (("value", 3.0),)}
    monkeypatch.setattr(rp, "SECTIONS", tuple(dataclasses.replace(s, overrides=changed.get(s.name, s.overrides))
                                              for s in rp.SECTIONS))
    doc = rp.reproduce("test", out, progress=False, log=lambda m: None)
    assert calls == ["transition", "gahb", "manifold"]
    assert next(e for e in doc["sections"] if e["section"] == "manifold")["results"]["numbers"]["value"] == 3.0
    # --only leaves the other sections' earlier results in the report, marked as reused
    calls.clear()
    doc = rp.reproduce("test", out, only=["calpha"], rerun=True, progress=False, log=lambda m: None)
    assert calls == ["calpha"] and all(e["results"] for e in doc["sections"])


def test_left_out_section_without_results_says_so(tmp_path, monkeypatch):
    use_fakes(monkeypatch, {s.name: fake_study(s.name) for s in rp.SECTIONS})
    out = tmp_path / "rep"
    doc = rp.reproduce("test", out, skip=["shuffled"], progress=False, log=lambda m: None)
    e = next(e for e in doc["sections"] if e["section"] == "shuffled")
    assert e["status"] == "missing" and e["results"] is None
    assert doc["summary"]["sections_without_results"] == ["shuffled"] and doc["summary"]["failed_sections"] == []
    page = (out / "report.html").read_text()
    assert "it was not run" in page and 'id="sec-shuffled"' in page


def test_html_escapes_and_formats():
    from gahb.report.html import build_report, format_value

    assert format_value(-0.0) == "0" and format_value(None) == "\u2014" and format_value(0.123456) == "0.1235"
    assert format_value(list(range(20))).endswith("\u2026 (20 values)]")
    sec = {"section": "x", "title": "T <i>", "status": "ok", "study_preset": "test", "out_dir": "/nonexistent",
           "command": "gahb study x --set 'a=<b>'", "error": None,
           "results": {"claims": [common.claim("<script>alert(1)</script>", "&", 1.0, False, "<1")],
                       "figures": [{"path": "figures/missing.png", "caption": "c"}], "numbers": {"a": "<b>"},
                       "config": {}, "wall_time_s": 1.0, "command": "c", "environment": {}}}
    page = build_report([sec], {"preset": "test", "scale": "s <tiny>"})
    assert "<script>" not in page and "&lt;script&gt;" in page and "s &lt;tiny&gt;" in page
    assert "figures/missing.png</code> is missing" in page  # a lost figure is said, not dropped
    assert 'class="badge fail"' in page


def test_gahb_study_needs_its_inputs(tmp_path):
    mod = importlib.import_module("gahb.studies.gahb_basis")
    with pytest.raises(ValueError, match="transition_dir"):
        mod.run(mod.PRESETS["test"], tmp_path, progress=False)
    cfg = dataclasses.replace(mod.PRESETS["test"], transition_dir=str(tmp_path / "none"))
    with pytest.raises(FileNotFoundError, match="transition"):
        mod.run(cfg, tmp_path, progress=False)


def test_gahb_study_on_explicit_checkpoints(tmp_path):
    """Two saved runs -> the held-out image of their split, exact bias-free identity, claims from the numbers."""
    from conftest import make_tiny

    from gahb.data import load_split
    from gahb.models import ModelConfig
    from gahb.studies import gahb_basis
    from gahb.training.checkpoint import save_release

    spec = "synthetic:disks:size=16"
    runs = []
    for seed, n in ((0, 1), (1, 64)):
        run = tmp_path / f"N{n}"
        save_release(make_tiny("unet", seed=seed), run,
                     {"model": ModelConfig(arch="unet", num_blocks=2, width=8).to_dict(),
                      "data": {"dataset": spec, "seed": 0, "n": n}})
        runs.append(str(run))
    cfg = dataclasses.replace(gahb_basis.PRESETS["test"], checkpoints=tuple(runs), labels=("small", "large"))
    res = gahb_basis.run(cfg, tmp_path / "out", progress=False, preset="test")
    assert common.load_results(tmp_path / "out")["numbers"] == json.loads(json.dumps(res["numbers"]))
    split = load_split(spec, n=1, seed=0, progress=False)
    assert res["numbers"]["image"]["pool_row"] == int(split.test_indices[0])
    assert [m["run_dir"] for m in res["numbers"]["models"]] == runs
    claims = {c["name"]: c for c in res["claims"]}
    ident = claims["f(y) = J(y) y: the networks are exactly bias-free (eq. 6)"]
    assert ident["passed"] and ident["measured"] < 1e-4
    # tr J over the SURE images: a step is the mean of per-(image, draw) differences, which equals the
    # difference of the means (the same noise at every sigma); judged against twice its standard error
    tr = res["numbers"]["traces"]
    (st,), (a, b) = tr["steps"], tr["per_sigma"]
    assert st["mean"] == pytest.approx(a["generalising"]["mean"] - b["generalising"]["mean"], rel=1e-9)
    falls = claims["large: effective dimension tr J falls as sigma grows"]
    drop = 1 - b["generalising"]["mean"] / a["generalising"]["mean"]
    assert falls["passed"] == (st["mean"] > 2 * st["se"] and drop > 0.05)
    smaller = claims["the memorising network has a much smaller effective dimension than the generalising one"]
    assert smaller["passed"] == all(r["difference"]["lo"] > 0 for r in tr["per_sigma"])
    # asymmetry and spectra over the SURE images, beside the published reference
    over = res["numbers"]["over_images"]
    assert len(over["per_image"]) == cfg.sure_images and res["numbers"]["reference"] is not None
    # every judged row has its reference or uncertainty, and the claims are a function of results.json
    assert common.unsupported_claims(res["claims"]) == []
    assert common.rejudge("gahb_basis", common.load_results(tmp_path / "out")) == res["claims"]
    for f in res["figures"]:
        assert (tmp_path / "out" / f["path"]).stat().st_size > 1000


def test_section_dir_reuses_a_study_run_elsewhere(tmp_path, monkeypatch):
    from gahb.cli import main

    calls: list = []
    fakes = {s.name: fake_study(s.name, calls) for s in rp.SECTIONS}
    use_fakes(monkeypatch, fakes)
    done = tmp_path / "study-transition"
    fakes["transition"].run(FakeConfig(), done, preset="test")  # as `gahb study transition` would have
    calls.clear()
    out = tmp_path / "rep"
    assert main(["reproduce", "--preset", "test", "--out", str(out), "--quiet",
                 "--section-dir", f"transition={done}"]) == 0
    doc = json.loads((out / "reproduce.json").read_text())
    assert "transition" not in calls and not (out / "transition").exists()
    sec = {e["section"]: e for e in doc["sections"]}
    assert sec["transition"]["status"] == "reused" and sec["transition"]["out_dir"] == str(done)
    assert sec["gahb"]["results"]["config"]["transition_dir"] == str(done)
    assert main(["reproduce", "--preset", "test", "--out", str(out), "--quiet", "--section-dir", "nope"]) == 1


def test_partial_report_is_written_after_each_section(tmp_path, monkeypatch):
    fakes = {s.name: fake_study(s.name) for s in rp.SECTIONS}
    seen = {}
    inner = fakes["shuffled"].run

    def shuffled_run(config, out_dir, **kw):
        page = (Path(out_dir).parent / "report.html").read_text()
        doc = json.loads((Path(out_dir).parent / "reproduce.json").read_text())
        seen["partial"] = "Partial report" in page and doc["meta"]["complete"] is False
        seen["status"] = {e["section"]: e["status"] for e in doc["sections"]}
        return inner(config, out_dir, **kw)

    fakes["shuffled"] = types.SimpleNamespace(PRESETS=fakes["shuffled"].PRESETS, run=shuffled_run)
    use_fakes(monkeypatch, fakes)
    doc = rp.reproduce("test", tmp_path / "rep", progress=False, log=lambda m: None)
    assert seen["partial"] and seen["status"]["manifold"] == "ok" and seen["status"]["shuffled"] == "pending"
    assert doc["meta"]["complete"] is True
    assert "Partial report" not in (tmp_path / "rep" / "report.html").read_text()


def test_finished_section_config_matching():
    from gahb.studies.reproduce import _same_config

    old = {"epochs": 6, "runs_dir": "runs/x", "threads": 1, "dataset": "fashion-mnist"}
    assert _same_config(old, {"epochs": 6, "runs_dir": None, "threads": 2, "dataset": "fashion-mnist"})
    # a field added to the study after the run (default keeps the old behaviour) is not compared
    assert _same_config(old, {"epochs": 6, "runs_dir": None, "dataset": "fashion-mnist", "sigma_max": 1.0})
    assert not _same_config(old, {"epochs": 7, "runs_dir": "runs/x", "dataset": "fashion-mnist"})
    assert not _same_config(old, {"epochs": 6, "dataset": "fashion-mnist"} | {"dataset": "other"})
    assert not _same_config({"epochs": 6, "gone": 1}, {"epochs": 6})
    assert not _same_config(None, {"epochs": 6})
    # ... unless the study declares the value older results had and another one is requested
    # (calpha's loss_weight: results from before it existed trained with the unweighted loss; a run
    # asking for the eps variant must not reuse them).
    from gahb.studies import calpha

    legacy = calpha.LEGACY_VALUES
    assert not _same_config(old, {**old, "loss_weight": "eps"}, legacy)
    assert _same_config(old, {**old, "loss_weight": "none"}, legacy)
    assert _same_config({**old, "loss_weight": "eps"}, {**old, "loss_weight": "eps"}, legacy)


def test_results_from_before_the_ema_are_reused_only_without_it():
    """Every study that trains or loads networks measures the EMA weights by default (``weights``); results
    written before the EMA existed were measured on raw weights of runs without one."""
    from gahb.studies import get_study
    from gahb.studies.common import config_to_dict
    from gahb.studies.reproduce import _same_config, legacy_values
    from gahb.utils.config import flat

    ema_fields = ("ema_halflife_kimg", "ema_rampup_ratio", "weights")
    for name in ("transition", "calpha", "manifold", "shuffled", "gahb_basis"):
        mod = get_study(name)
        cfg = mod.PRESETS["test"]
        new = flat(config_to_dict(cfg))
        assert new["weights"] == "ema", name
        old = {k: v for k, v in new.items() if k not in ema_fields}
        assert _same_config(old, {**new, "ema_halflife_kimg": None, "weights": "raw"}, legacy_values(mod, cfg)), name
        assert not _same_config(old, {**new, "ema_halflife_kimg": None}, legacy_values(mod, cfg)), name
        if "ema_halflife_kimg" in new:
            assert not _same_config(old, {**new, "ema_halflife_kimg": 10.0, "weights": "raw"}, legacy_values(mod, cfg))


def test_recipe_carries_the_ema_into_the_train_config():
    from gahb.training.recipe import Recipe

    tcfg = Recipe(ema_halflife_kimg=2.0, ema_rampup_ratio=None).train_config(100, seed=0, device="cpu")
    assert tcfg.ema_halflife_kimg == 2.0 and tcfg.ema_rampup_ratio is None
    assert Recipe(ema_halflife_kimg=None).train_config(100, seed=0, device="cpu").ema_halflife_kimg is None
    with pytest.raises(ValueError, match="weights"):
        Recipe(weights="average")


def test_quick_claims_carry_the_verdict_of_the_committed_standard_results(tmp_path):
    import json

    from gahb.studies.common import claim
    from gahb.studies.reproduce import with_standard_verdicts

    folder = tmp_path / "docs" / "results" / "calpha"
    folder.mkdir(parents=True)
    std = [claim("slope a", "p", 0.5, True), claim("slope b [variant: loss weight eps]", "p", 0.2, False)]
    (folder / "results.json").write_text(json.dumps({"claims": std}))
    rows = [claim("slope a", "p", 0.4, False), claim("slope b", "p", 0.3, True), claim("new row", "p", 1, None)]
    out = with_standard_verdicts("calpha", rows, root=tmp_path)
    assert [c["standard"] for c in out] == ["pass", "fail", "not in the committed results"]
    assert [c["standard"] for c in with_standard_verdicts("shuffled", rows, root=tmp_path)] == \
        ["not in the committed results"] * 3
