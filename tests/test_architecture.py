"""The package's shape: imports follow the pipeline, and the responses record reads what it writes."""

import ast
import re
from pathlib import Path

import pytest

from tunescope.generate.store import ResponseRecord

SOURCE = Path(__file__).parents[1] / "src"

# A module may import its own package and any package ranked lower; packages of equal rank are
# siblings and may not import each other. Rank 0 is shared, stage-neutral code (tunescope/*.py and
# tunescope/llm): its modules may import each other, without cycles.
RANKS = {
    "tunescope": 0,
    "tunescope.llm": 0,
    "tunescope.data": 1,
    "tunescope.train": 2,
    "tunescope.generate": 3,
    "tunescope.shift": 4,
    "tunescope.borrow": 5,
    "tunescope.simplify": 6,
    "tunescope.judge": 6,
    "tunescope.probe": 6,
    "tunescope.experiment": 7,
    "tunescope.report": 8,
    "tunescope.notebook": 9,
    "tunescope.commands": 9,
    "tunescope.cli": 10,
    "tunescope.__main__": 11,
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SOURCE).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted((SOURCE / "tunescope").rglob("*.py"))}


def imported_modules(name: str) -> set[str]:
    """Every tunescope module ``name`` imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(MODULES[name].read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.split(".")[0] == "tunescope"}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "tunescope":
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                found.add(submodule if submodule in MODULES else node.module)
    return found - {name}


GRAPH = {name: imported_modules(name) for name in MODULES}


def package(name: str) -> str:
    """The entry of RANKS a module belongs to: its longest listed prefix (a new subpackage needs its own)."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        prefix = ".".join(parts[:end])
        if prefix in RANKS and (prefix != "tunescope" or len(parts) <= 2):
            return prefix
    raise AssertionError(f"{name} is in no package of RANKS: give it a rank")


def wrong_imports(graph: dict[str, set[str]]) -> list[str]:
    """Imports of a later stage or of a sibling."""
    wrong = []
    for name, imports in graph.items():
        for target in imports:
            mine, theirs = package(name), package(target)
            if mine == theirs or RANKS[theirs] < RANKS[mine] or RANKS[theirs] == RANKS[mine] == 0:
                continue
            wrong.append(f"{name} imports {target}")
    return sorted(wrong)


def import_cycles(graph: dict[str, set[str]]) -> list[str]:
    """One path around each cycle that a depth-first walk meets."""
    state: dict[str, str] = {}
    cycles = []

    def visit(name: str, path: list[str]) -> None:
        state[name] = "open"
        for target in sorted(graph.get(name, ())):
            if state.get(target) == "open":
                cycles.append(" -> ".join([*path[path.index(target) :], target]))
            elif target not in state:
                visit(target, [*path, target])
        state[name] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    return cycles


def test_every_module_has_a_rank():
    assert {package(name) for name in MODULES} <= set(RANKS)
    with pytest.raises(AssertionError, match="give it a rank"):
        package("tunescope.newstage.pipeline")


def test_no_module_imports_a_later_stage_or_a_sibling():
    assert not wrong_imports(GRAPH), "\n".join(wrong_imports(GRAPH))


def test_there_is_no_import_cycle():
    assert not import_cycles(GRAPH), "\n".join(import_cycles(GRAPH))


def test_the_checks_find_what_they_forbid():
    made_up = {
        "tunescope.train.monitor": {"tunescope.shift.metrics", "tunescope.decoding"},  # a later stage; shared code
        "tunescope.simplify.pipeline": {"tunescope.judge.requests"},  # a sibling
        "tunescope.llm.local": {"tunescope.models"},  # shared code among itself
        "tunescope.shift.a": {"tunescope.shift.b"},
        "tunescope.shift.b": {"tunescope.shift.a"},
    }
    assert wrong_imports(made_up) == [
        "tunescope.simplify.pipeline imports tunescope.judge.requests",
        "tunescope.train.monitor imports tunescope.shift.metrics",
    ]
    assert import_cycles(made_up) == ["tunescope.shift.a -> tunescope.shift.b -> tunescope.shift.a"]
    assert "tunescope.llm" in GRAPH["tunescope.simplify.pipeline"]  # the real graph is read
    assert "tunescope.generate.store" in GRAPH["tunescope.shift.inputs"]


def test_every_cited_method_section_exists():
    root = SOURCE.parent
    method = (root / "docs" / "method.md").read_text(encoding="utf-8")
    # GitHub's anchors: headings lower-cased, punctuation dropped, spaces as hyphens.
    anchors = {
        re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        for heading in re.findall(r"^#+ (.+)$", method, re.M)
    }
    cited = {}
    for path in [*(root / "src").rglob("*.py"), *(root / "docs").glob("*.md"), root / "README.md"]:
        for anchor in re.findall(r"method\.md#([\w-]+)", path.read_text(encoding="utf-8")):
            cited.setdefault(anchor, path.name)
    assert len(cited) >= 8 and "averaging" in anchors
    assert not {anchor: where for anchor, where in cited.items() if anchor not in anchors}
    no_outside_documents = re.compile(r"PAPER_SPEC|PEERS §|OFFLINE_ASSETS|CONVENTIONS\.md")
    assert not [path for path in (root / "src").rglob("*.py") if no_outside_documents.search(path.read_text())]


# ------------------------------------------------------------------------------------------
# The responses record


def test_a_record_reads_back_as_written():
    record = ResponseRecord(
        id="q1", instruction="Name a colour.", messages=[{"role": "user", "content": "Name a colour."}],
        reference="Blue.", prompt="<user>Name a colour.</user>", prompt_token_ids=[1, 2], output_token_ids=[3, 4],
        output="Red.", finish_reason="stop", model="runs/lora", generation={"max_new_tokens": 8}, tags=("colours",),
    )  # fmt: skip
    fields = record.to_fields()
    assert list(fields)[:11] == [
        "id", "instruction", "messages", "reference", "prompt", "prompt_token_ids", "output_token_ids", "output",
        "finish_reason", "model", "generation",
    ]  # fmt: skip
    assert "index" not in fields and "locator" not in fields
    assert ResponseRecord.from_fields(fields, 0, "x line 1") == record
    untagged = ResponseRecord.from_fields({**fields, "tags": []}, 0, "x line 1")
    assert "tags" not in untagged.to_fields()  # generate's lines stay as they were


@pytest.mark.parametrize(
    ("fields", "messages", "output", "model"),
    [
        ({"instruction": "Q?", "input": "ctx", "output": "A"}, [{"role": "user", "content": "Q?\n\nctx"}], "A", None),
        ({"input": "Q?", "output_cand": "A", "generator_cand": "m"}, [{"role": "user", "content": "Q?"}], "A", "m"),
        ({"conversations": [{"from": "human", "value": "Q?"}, {"from": "gpt", "value": "A"}]},
         [{"role": "user", "content": "Q?"}], "A", None),
        ({"prompt": "Q?", "completion": "A", "generator": "g"}, [{"role": "user", "content": "Q?"}], "A", "g"),
        ({"prompt_token_ids": [1], "output_token_ids": [2]}, None, None, None),
    ],
)  # fmt: skip
def test_one_parser_reads_every_shape_a_stage_accepts(fields, messages, output, model):
    record = ResponseRecord.from_fields(fields, 4, "x line 5")
    assert (record.messages, record.output, record.model, record.id) == (messages, output, model, "4")
