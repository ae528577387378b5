"""Experiment grid, resume after a kill, and the report (in a real headless Chromium)."""

import json
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tunescope.cli import main
from tunescope.errors import UserError

from conftest import PAIRS, build_tiny_llama, build_tiny_tokenizer, rows_in_format, write_jsonl

# A dataset name with markup: it reaches the page as text, and must arrive escaped.
HOSTILE_NAME = "mix<script>alert(1)</script>"


def write_experiment(root: Path, borrow: bool = False) -> Path:
    tokenizer = build_tiny_tokenizer()
    build_tiny_llama(tokenizer).save_pretrained(root / "model")
    tokenizer.save_pretrained(root / "model")
    write_jsonl(root / "train.jsonl", rows_in_format("messages") * 2)
    prompts = [{"id": f"p{i}", "messages": [{"role": "user", "content": q}]} for i, (q, _) in enumerate(PAIRS[:4])]
    write_jsonl(root / "prompts.jsonl", prompts)
    config = {
        "models": [str(root / "model")],
        "datasets": [
            {
                "name": HOSTILE_NAME,
                "sources": [{"data": str(root / "train.jsonl")}, {"data": "facts", "subset_size": 8}],
            }
        ],
        "train": {
            "epochs": 1, "effective_batch_size": 4, "micro_batch_size": 2, "max_length": 128,
            "lora_learning_rate": 3e-2, "full_learning_rate": 1e-2, "monitor_every": 2,
            "monitor_prompts": str(root / "prompts.jsonl"), "monitor_examples": 2, "monitor_tokens": 4, "save_steps": 2,
        },
        "eval": {"prompts": str(root / "prompts.jsonl"), "max_new_tokens": 8},
        "judge": {"backend": "hf", "judge_model": str(root / "model"), "max_new_tokens": 400, "limit": 2},
        "probes": {"max_questions": 8, "passages": 2},
        "borrow": borrow,
    }  # fmt: skip
    path = root / "experiment.yaml"
    path.write_text(json.dumps(config))  # JSON is YAML
    return path


@pytest.fixture(scope="module")
def finished_experiment(tmp_path_factory):
    root = tmp_path_factory.mktemp("experiment")
    config = write_experiment(root, borrow=True)
    # Run from the experiment's parent with a relative --out, as `tunescope demo` is run from a repository.
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        assert main(["experiment", "--config", str(config), "--out", "run"]) == 0
    return root / "run"


def test_every_stage_runs_and_the_manifest_lists_it(finished_experiment):
    manifest = json.loads((finished_experiment / "experiment.json").read_text())
    assert manifest["complete"] is True
    [cell] = manifest["cells"]
    expected = {"data", "base_generate", "judge", "probe"} | {
        f"{method}/{stage}" for method in ("lora", "full") for stage in ("train", "generate", "shift", "borrow")
    }
    assert expected <= set(cell["stages"])
    for name, summary in cell["stages"].items():
        assert summary is not None, name
        assert (finished_experiment / summary["dir"]).is_dir()
    assert (finished_experiment / cell["stages"]["lora/train"]["dir"] / "adapter").is_dir()
    assert (finished_experiment / cell["stages"]["full/train"]["dir"] / "model").is_dir()
    # A finished run keeps its weights and metrics; its checkpoints served only to resume.
    for method in ("lora", "full"):
        run = finished_experiment / cell["stages"][f"{method}/train"]["dir"]
        assert (run / "metrics.jsonl").is_file() and not (run / "checkpoints").exists()
        assert cell["stages"][f"{method}/train"]["disk_bytes"] == sum(
            path.stat().st_size for path in run.rglob("*") if path.is_file()
        )
    # The progress lines, with each stage's disk use, are kept in the experiment's log.
    log = (finished_experiment / "log.txt").read_text()
    assert log.count(" on disk") == len(cell["stages"]) and "train lora" in log


def test_timings_say_where_the_time_went_per_stage_and_kind(finished_experiment):
    from tunescope.experiment.timings import add_to_timings, format_breakdown

    timings = json.loads((finished_experiment / "timings.json").read_text())
    manifest = json.loads((finished_experiment / "experiment.json").read_text())
    [cell] = manifest["cells"]
    assert len(timings["stages"]) == len(cell["stages"]) and all(stage["ran_now"] for stage in timings["stages"])
    kinds = timings["kinds"]
    assert list(kinds)[:3] == ["data", "train", "generate"]  # pipeline order
    assert kinds["train"]["stages"] == 2 and kinds["generate"]["stages"] == 3
    assert kinds["train"]["seconds"] == pytest.approx(
        sum(stage["seconds"] for stage in timings["stages"] if stage["stage"] == "train"), abs=0.11
    )
    assert sum(kind["share"] for kind in kinds.values()) == pytest.approx(1.0, abs=1e-3)
    with_report = add_to_timings(finished_experiment, {"report": 2.0})
    assert with_report["total_seconds"] == pytest.approx(timings["total_seconds"] + 2.0, abs=0.11)
    assert with_report["kinds"]["report"] == {
        "seconds": 2.0,
        "share": pytest.approx(2.0 / with_report["total_seconds"], abs=1e-3),
        "stages": 0,
    }
    assert "report" in format_breakdown(with_report) and "total" in format_breakdown(with_report)


VERDICTS = {"reproduced", "not reproduced", "inconclusive", "not tested"}
TEXT_KEYS = {"claim", "paper", "rule", "reason", "method", "note", "notes", "name", "items", "unit", "definition"}


def formatted_numbers(data, key=""):
    """Strings in report.json that are numbers in disguise ('93.0%', '0.0427 [0.0230, 0.0667]')."""
    if isinstance(data, dict):
        return [bad for k, value in data.items() for bad in formatted_numbers(value, k)]
    if isinstance(data, list):
        return [bad for value in data for bad in formatted_numbers(value, key)]
    if isinstance(data, str) and key not in TEXT_KEYS and re.fullmatch(r"[-+]?\d[\d.]*\s*(%|\[.*\])", data.strip()):
        return [f"{key}: {data}"]
    return []


def check_finding(finding):
    assert finding["verdict"] in VERDICTS and isinstance(finding["rule"], str) and finding["reason"]
    assert isinstance(finding["cell"], dict) and "detectable" in finding and "n" in finding
    effect = finding["effect"]
    if effect is not None:
        assert isinstance(effect["n"], int) and effect["n"] == finding["n"] and effect["unit"]
        assert effect["value"] is None or isinstance(effect["value"], float)
        for name in ("ci95", "ci90"):
            interval = effect[name]
            assert interval is None or (
                isinstance(interval, list) and interval[0] <= interval[1] and len(interval) == 2
            )
        if effect["ci95"] is not None:
            assert effect["ci95"][0] <= effect["value"] <= effect["ci95"][1]
            assert isinstance(finding["detectable"], float) and finding["detectable"] > 0
    elif finding["verdict"] != "not tested":
        raise AssertionError(f"{finding['key']}: a verdict without an effect")
    if finding["verdict"] != "not tested":
        assert finding["cell"]["model"] and finding["cell"]["dataset"]
    for measurement in finding["measurements"]:
        assert measurement["unit"] and (measurement["ci95"] is None or len(measurement["ci95"]) == 2)


def test_a_copied_experiment_reports_the_same_from_another_directory(finished_experiment, tmp_path, monkeypatch):
    copy = tmp_path / "laptop" / "shared-run"
    shutil.copytree(finished_experiment, copy)
    elsewhere = tmp_path / "somewhere-else"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert main(["report", str(copy)]) == 0

    original = json.loads((finished_experiment / "report.json").read_text())
    moved = json.loads((copy / "report.json").read_text())
    assert moved["experiment"] == str(copy)
    for data in (original, moved):
        del data["generated"], data["experiment"]
    assert moved == original
    # What the copy used to lose: the tuned models' probe rows, and the findings drawn from them.
    [cell] = moved["cells"]
    assert {"base", "lora", "full"} <= set(cell["probe"]["models"])
    forgetting = next(finding for finding in moved["findings"] if finding["key"] == "forgetting")
    assert forgetting["verdict"] != "not tested"
    # No stored path names the directory the experiment was run from.
    for path in [
        copy / "experiment.json",
        *copy.glob("stages/*/probe/probe.json"),
        *copy.glob("stages/*/*/summary.json"),
    ]:
        assert str(finished_experiment) not in path.read_text() and '"run/stages' not in path.read_text(), path


def test_report_shows_every_models_answers_side_by_side(finished_experiment):
    from markupsafe import escape

    [cell] = json.loads((finished_experiment / "report.json").read_text())["cells"]
    answers = cell["answers"]
    assert answers["models"] == ["base", "lora", "full"]
    assert len(answers["prompts"]) == 4
    stages = json.loads((finished_experiment / "experiment.json").read_text())["cells"][0]["stages"]
    files = {"base": "base_generate", "lora": "lora/generate", "full": "full/generate"}
    written = {
        model: {
            row["id"]: row
            for row in map(json.loads, (finished_experiment / stages[stage]["dir"] / "responses.jsonl").open())
        }
        for model, stage in files.items()
    }
    for prompt in answers["prompts"]:
        assert set(prompt["answers"]) == {"base", "lora", "full"}
        for model, answer in prompt["answers"].items():
            record = written[model][prompt["id"]]
            assert answer["text"] == record["output"]
            assert answer["truncated"] == (record["finish_reason"] == "length")
            assert answer["n_tokens"] == len(record["output_token_ids"])
            if model == "base":
                assert answer["kl"] is None and answer["viewer"] is None
                continue
            assert answer["kl"] >= 0 and 0 <= answer["shifted"] <= 1
            viewer, anchor = answer["viewer"].split("#")
            with (finished_experiment / viewer).open(encoding="utf-8", newline="") as handle:  # answers hold \r
                page = handle.read()
            assert f'id="{anchor}"' in page
            # The viewer shows the base model's own answer beside the tuned one.
            assert "own answer" in page and str(escape(written["base"][prompt["id"]]["output"])) in page
    assert answers["counts"]["base"]["truncated"] == sum(
        r["finish_reason"] == "length" for r in written["base"].values()
    )
    assert any(pick["why"].startswith("largest shift") for pick in answers["look_at"])


def test_report_json_is_data_with_a_rule_and_numbers_behind_every_verdict(finished_experiment):
    text = (finished_experiment / "report.json").read_text()
    report = json.loads(text)
    assert report["schema_version"] == 2 and "data:image" not in text
    assert formatted_numbers(report) == []
    verdicts = {f["key"]: f["verdict"] for f in report["findings"]}
    assert list(verdicts) == ["kl", "unshifted", "initiation", "knowledge", "forgetting", "judge", "size", "style",
                              "borrowed"]  # fmt: skip
    for finding in report["findings"]:
        check_finding(finding)
    assert verdicts["size"] == "not tested"  # one training-set size only
    assert verdicts["judge"] == "not tested"  # a tiny stand-in judge never gets a verdict
    assert verdicts["style"] != "not tested"  # from both runs' per-response counts in borrow.json
    assert verdicts["kl"] != "not tested" and verdicts["forgetting"] != "not tested"
    # Whether the tiny model's answers have words at unshifted positions depends on its training: either way
    # the finding says why, or rests on the full run's 4 answers.
    borrowed = next(f for f in report["findings"] if f["key"] == "borrowed")
    if borrowed["verdict"] == "not tested":
        assert "no words" in borrowed["reason"]
    else:
        assert borrowed["n"] == 4 and borrowed["effect"]["items"] == "responses"
    [cell] = report["cells"]
    assert [f["key"] for f in cell["findings"]] == ["kl", "unshifted", "initiation", "knowledge", "forgetting",
                                                    "judge", "style", "borrowed"]  # fmt: skip
    for finding in cell["findings"]:
        check_finding(finding)
        assert finding["cell"]["name"] == cell["name"]
    for row in cell["shift"]:
        assert isinstance(row["kl"]["value"], float) and row["kl"]["unit"] == "nats per token"
        assert row["tr"]["value"] <= 50 and row["tr_median"] <= 50 and row["base_rank"]["value"] >= 1
        assert row["bootstrap"]["method"].startswith("BCa")
    assert set(cell["probe"]["models"]) == {"base", "lora", "full"}
    assert report["settings"]["bootstrap_resamples"] > 0 and report["settings"]["margins"]["knowledge"] == 0.1


def test_report_with_the_bootstrap_off_is_inconclusive_and_says_why(finished_experiment, tmp_path):
    assert main(["report", str(finished_experiment), "--out", str(tmp_path), "--bootstrap-samples", "0"]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert any("bootstrap is off" in note for note in report["notes"])
    for finding in report["findings"]:
        check_finding(finding)
        if finding["verdict"] != "not tested" and finding["key"] != "knowledge":  # knowledge: score intervals
            assert finding["verdict"] == "inconclusive" and "bootstrap off" in finding["reason"], finding["key"]
    assert "bootstrap is off" in (tmp_path / "report.html").read_text()


def test_report_renders_in_headless_chromium(finished_experiment, tmp_path):
    from playwright.sync_api import sync_playwright

    browser_path = shutil.which("chromium") or shutil.which("chromium-headless-shell")
    assert browser_path, "Debian's chromium is needed for this test (make test installs it where apt-get can)"
    html = (finished_experiment / "report.html").read_text()
    assert "<script>alert(1)</script>" not in html and "mix&lt;script&gt;" in html
    assert "http://" not in html and "https://" not in html  # self-contained: nothing to fetch
    problems = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=browser_path,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"],
        )
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: problems.append(str(error)))
        page.on("requestfailed", lambda request: problems.append(f"failed: {request.url}"))
        page.goto((finished_experiment / "report.html").as_uri())
        assert page.locator("#findings-table tr").count() == 1 + 9
        assert page.get_by_text("style share", exact=False).count() >= 1  # the borrowing sections
        assert page.locator("table.answers tr").count() == 1 + 4  # the answers, side by side
        assert page.locator("table.answers td.answer").count() == 3 * 4
        assert page.locator("table.answers .flag").count() >= 1  # 8 new tokens: some answers are cut
        assert page.locator("ul.look-at li").count() >= 1
        images = page.locator("img")
        assert images.count() >= 6
        # Every figure decoded: an image that failed to load has no natural width.
        assert page.evaluate("Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        browser.close()
    assert problems == []
    assert (tmp_path / "report.png").read_bytes()[:4] == b"\x89PNG"


def test_killed_experiment_resumes_without_redoing_stages(tmp_path):
    config = write_experiment(tmp_path)
    out = tmp_path / "run"
    process = subprocess.Popen(
        [sys.executable, "-m", "tunescope", "experiment", "--config", str(config), "--out", str(out), "--no-report"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    # Kill after the first training stage finished, while the rest of the grid is still to do.
    while time.monotonic() < deadline and process.poll() is None:
        if any(path.name.startswith("train-") for path in (out / "done").glob("*.json")):
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    finished = {path.name: path.read_text() for path in (out / "done").glob("*.json")}
    assert any(name.startswith("train-") for name in finished), "no stage finished before the kill"
    assert not json.loads((out / "experiment.json").read_text())["complete"]

    assert main(["experiment", "--config", str(config), "--out", str(out), "--no-report"]) == 0
    for name, content in finished.items():
        assert (out / "done" / name).read_text() == content, f"{name} was redone"
    manifest = json.loads((out / "experiment.json").read_text())
    assert manifest["complete"] is True
    assert len(list((out / "done").glob("*.json"))) == len(manifest["cells"][0]["stages"])
    # The breakdown covers the whole experiment and says which stages this invocation ran.
    timings = json.loads((out / "timings.json").read_text())
    assert len(timings["stages"]) == len(manifest["cells"][0]["stages"])
    assert sum(not stage["ran_now"] for stage in timings["stages"]) == len(finished)


def test_report_of_a_directory_without_an_experiment(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "no experiment.json" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("quick", "model"), [(False, []), (True, []), (False, ["--model", "smollm2"]), (True, ["--model", "smollm2"])]
)
def test_printed_demo_grid_is_the_demo(tmp_path, capsys, quick, model):
    from tunescope.config import build_config
    from tunescope.experiment.config import ExperimentConfig
    from tunescope.experiment.demo import demo_config

    assert main(["demo", "--print-config", *(["--quick"] if quick else []), *model]) == 0
    grid = tmp_path / "grid.yaml"
    grid.write_text(capsys.readouterr().out)
    expected = demo_config(quick=quick, **({"model": model[1]} if model else {}))
    assert build_config(ExperimentConfig, yaml_path=grid) == expected
    assert expected.models == [model[1] if model else "gemma3-270m"]
    assert not (tmp_path / "runs").exists()  # printed, not run


def test_quick_demo_changes_only_what_its_overrides_name():
    from tunescope.experiment.demo import demo_config

    gemma = {"model": "gemma3-270m"}
    quick, full = demo_config(quick=True, **gemma).model_dump(), demo_config(**gemma).model_dump()
    changed = {key for key in full if quick[key] != full[key]}
    assert changed == {"datasets", "subset_sizes", "train", "eval", "probes"}
    assert {k for k in full["train"] if quick["train"][k] != full["train"][k]} == {
        "save_steps", "monitor_every", "monitor_examples", "monitor_tokens"
    }  # fmt: skip
    assert [s["subset_size"] for s in quick["datasets"][0]["sources"]] == [16, 16]
    assert quick["probes"]["subset_sizes"] == quick["subset_sizes"] == [32]


def test_demo_grids_share_the_common_settings_and_the_gemma_grid_has_two_nested_sizes_8x_apart():
    from tunescope.experiment.demo import demo_config

    gemma, smollm2 = demo_config(), demo_config(model="smollm2")
    assert gemma.models == ["gemma3-270m"] and smollm2.models == ["smollm2"]
    small, large = gemma.subset_sizes
    mixed = sum(source.subset_size for source in gemma.datasets[0].sources)
    assert large >= 8 * small and large <= mixed  # nested subsets of one mixed dataset
    for key in ("max_length", "effective_batch_size", "micro_batch_size"):
        assert gemma.train[key] == smollm2.train[key]
    # Each model's grid sets LoRA's rate above full fine-tuning's.
    for grid in (gemma, smollm2):
        assert grid.train["lora_learning_rate"] > grid.train["full_learning_rate"]
    assert gemma.judge == {**smollm2.judge, "limit": gemma.judge["limit"]}


def test_shipped_paper_grid_is_valid():
    from tunescope.config import build_config
    from tunescope.experiment.config import ExperimentConfig

    configs = Path(__file__).parents[1] / "configs"
    paper = build_config(ExperimentConfig, yaml_path=configs / "experiment_paper.yaml")
    assert paper.subset_sizes == [1000, 10000, 25000, 52002] and paper.train["learning_rate"] == 5e-5


def test_demo_configs_are_valid():
    from tunescope.experiment.demo import demo_config

    for model in ("gemma3-270m", "smollm2"):
        quick, full = demo_config(quick=True, model=model), demo_config(model=model)
        assert quick.methods == full.methods == ["lora", "full"]

        def rows_trained(config):
            return sum(source.subset_size for source in config.datasets[0].sources) * config.train["epochs"]

        assert rows_trained(quick) < rows_trained(full)
    assert (
        demo_config(judge={"backend": "openai", "judge_base_url": "http://127.0.0.1:1/v1"}).judge["backend"] == "openai"
    )


def test_notebook_loads_an_experiment_and_its_stages(finished_experiment, monkeypatch, tmp_path):
    from tunescope.notebook import Experiment, StageOutput, load

    monkeypatch.chdir(tmp_path)  # from anywhere
    experiment = load(finished_experiment, bootstrap_samples=200)
    assert isinstance(experiment, Experiment) and experiment.complete
    report = json.loads((finished_experiment / "report.json").read_text())
    assert set(experiment.findings["key"]) == {finding["key"] for finding in report["findings"]}
    shift = experiment.shift.set_index("method")
    assert set(shift.index) == {"lora", "full"}
    for method in ("lora", "full"):
        tokens = experiment.tokens(method)
        assert len(tokens) == shift.loc[method, "n_tokens"]
        assert shift.loc[method, "kl"] == pytest.approx(tokens["kl"].mean(), rel=1e-4)
        assert shift.loc[method, "shifted"] == pytest.approx((tokens["klass"] == "shifted").mean())
        assert shift.loc[method, "kl_ci_low"] <= shift.loc[method, "kl"] <= shift.loc[method, "kl_ci_high"]
    assert set(experiment.probe["model"]) == {"base", "lora", "full"}
    assert {"heldout_loss", "facts", "facts_ci_low", "facts_ci_high", "retained_ci_high"} <= set(experiment.probe)
    assert set(experiment.judge["aspect"]) >= {"overall"}
    assert len(experiment.judgements()) > 0
    answers = experiment.answers
    assert len(answers) == 3 * 4 and set(answers["model"]) == {"base", "lora", "full"}
    stages = experiment.stages
    assert (stages["disk_bytes"] > 0).all() and set(stages["step"]) >= {"lora/train", "full/shift", "probe"}
    assert len(experiment.training) == 2 and (experiment.training["steps"] > 0).all()

    # A single stage: the experiment's stage directory, or the command's own output inside it.
    manifest = json.loads((finished_experiment / "experiment.json").read_text())["cells"][0]["stages"]
    trained = load(finished_experiment / manifest["lora/train"]["dir"])
    assert isinstance(trained, StageOutput) and trained.kind == "train"
    assert trained.summary["steps"] == len(trained.frames["metrics"].dropna(subset=["loss"]))
    assert Path(trained.settings["data"]).is_file()  # recorded relative, usable from here
    shifted = load(finished_experiment / manifest["lora/shift"]["dir"] / "shift")
    assert shifted.kind == "shift" and len(shifted.frames["tokens"]) == shift.loc["lora", "n_tokens"]
    probe = load(finished_experiment / manifest["probe"]["dir"])
    assert probe.kind == "probe" and set(probe.frames["models"]["set"]) >= {"facts", "control", "general"}
    generated = load(finished_experiment / manifest["base_generate"]["dir"])
    assert generated.kind == "generate" and generated.summary["responses"] == 4
    with pytest.raises(UserError, match="holds no tunescope"):
        load(tmp_path)
