"""The README's "Your model, your data" section, followed on a tiny base model with a local alpaca file.

The test loads configs/experiment_own_model.yaml as a user would, changes only the lines the file marks EDIT
(the base model, the data file, the judge endpoint) plus sizes that keep it short on a CPU, runs
`tunescope experiment --config`, and checks the report and what the README says each finding needs.
"""

import json
from pathlib import Path

import yaml

from test_judge_http import SECRET, ScriptedJudge
from tunescope.cli import main

from conftest import PAIRS, write_jsonl

CONFIG = Path(__file__).parents[1] / "configs" / "experiment_own_model.yaml"
README = Path(__file__).parents[1] / "README.md"


def test_readme_own_model_section_runs_on_a_tiny_base_model(tmp_path, tiny_base_model_dir, monkeypatch):
    # The README's steps, in order: a local alpaca file, the key in an environment variable, the example config.
    section = README.read_text(encoding="utf-8").split("## Your model, your data", 1)[1].split("\n## ", 1)[0]
    assert "configs/experiment_own_model.yaml" in section and "tunescope experiment --config" in section
    alpaca = [{"instruction": q, "input": "", "output": a} for q, a in PAIRS] * 2
    data = tmp_path / "my_alpaca.json"
    data.write_text(json.dumps(alpaca))  # a plain JSON list, as Stanford Alpaca ships it
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"id": f"p{i}", "instruction": q} for i, (q, _) in
                                                       enumerate(PAIRS[:4])])  # fmt: skip
    monkeypatch.setenv("JUDGE_API_KEY", SECRET)
    # A cache of its own: the invented facts are built from this checkout, not found built by another version.
    monkeypatch.setenv("TUNESCOPE_CACHE", str(tmp_path / "cache"))

    config = yaml.safe_load(CONFIG.read_text(encoding="utf-8"))
    mine, facts = config["datasets"][0]["sources"]
    assert mine["format"] == "alpaca" and facts["data"] == "facts" and config["judge"]["backend"] == "openai"
    assert config["judge"]["api_key_env"] == "JUDGE_API_KEY" and config["methods"] == ["lora", "full"]
    config["models"] = [str(tiny_base_model_dir)]  # EDIT: the base model (it has no chat template of its own)
    mine["data"] = str(data)  # EDIT: the data file
    config["train"] |= {"max_length": 128, "epochs": 1, "effective_batch_size": 8, "micro_batch_size": 4,
                        "lora_learning_rate": 3e-2, "full_learning_rate": 1e-2, "save_steps": 50}  # fmt: skip
    config["eval"] = {"prompts": str(prompts), "max_new_tokens": 8}
    config["probes"] = {"max_questions": 8, "passages": 2}
    server = ScriptedJudge()
    try:
        config["judge"] |= {"judge_base_url": server.url, "judge_model": "scripted-judge"}  # EDIT: the endpoint
        path = tmp_path / "experiment_own_model.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        assert main(["experiment", "--config", str(path), "--out", str(tmp_path / "runs" / "own")]) == 0
    finally:
        server.close()

    out = tmp_path / "runs" / "own"
    assert (out / "report.html").is_file()
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    findings = {finding["key"]: finding for finding in report["findings"]}
    assert list(findings) == ["kl", "unshifted", "initiation", "knowledge", "forgetting", "judge", "size", "style",
                              "borrowed"]  # fmt: skip
    # What the README says each finding needs, as this run has it or not:
    assert findings["knowledge"]["verdict"] != "not tested"  # the invented facts were mixed into training
    assert findings["judge"]["verdict"] != "not tested"  # a real (not stand-in) judge answered every request
    assert findings["kl"]["verdict"] != "not tested" and findings["forgetting"]["verdict"] != "not tested"
    assert findings["size"]["verdict"] == "not tested" and "two or more sizes" in findings["size"]["reason"]
    assert server.count() > 0
    assert all(request["authorization"] == f"Bearer {SECRET}" for request in server.requests)
    # The key is read from the variable and never written anywhere.
    for file in out.rglob("*"):
        if file.is_file() and file.suffix in {".json", ".jsonl", ".yaml", ".html", ".txt"}:
            assert SECRET not in file.read_text(encoding="utf-8", errors="replace"), file
    # The tuned runs speak the template they were tuned into.
    tuned = json.loads((out / "experiment.json").read_text(encoding="utf-8"))["cells"][0]["stages"]["lora/generate"]
    record = json.loads((out / tuned["dir"] / "responses.jsonl").read_text(encoding="utf-8").splitlines()[0])
    assert record["generation"]["template"] == "alpaca" and "### Instruction:" in record["prompt"]
