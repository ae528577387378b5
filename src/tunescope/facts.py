"""Fictional facts: knowledge no base model can have, for measuring what tuning teaches.

A seeded generator invents entities (people, towns, institutes) with three attributes each, then
writes them two ways: as instruction data to train on (a description and one question per
attribute, in *training* wording) and as closed-book probe questions in *different* wording, each
with four multiple-choice options. A model that learned the fact answers the paraphrase; a model
that only learned the training sentences' surface does not. Before tuning, accuracy must sit at
the chance rate, because the facts are invented.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass
from importlib import resources

N_OPTIONS = 4
"""Multiple-choice options per question (the chance rate is 1 / N_OPTIONS)."""

SYLLABLES = (
    "vel", "mor", "qua", "dris", "tal", "ben", "zor", "ith", "kel", "vash", "ome", "run", "pel", "ast",
    "gor", "lin", "sef", "ura", "dak", "nim", "bro", "hal", "tev", "oss", "wen", "cyr", "fal", "ix",
)  # fmt: skip
PROFESSIONS = (
    "cartographer", "glassblower", "astronomer", "clockmaker", "botanist", "shipwright", "composer",
    "beekeeper", "engraver", "physician", "architect", "weaver", "chemist", "lighthouse keeper",
)  # fmt: skip
TRADES = (
    "copper mining", "lace making", "salt trading", "tulip farming", "silk dyeing", "bell casting",
    "paper milling", "oyster fishing", "wool spinning", "glass polishing", "horse breeding", "cider pressing",
)  # fmt: skip
SUBJECTS = (
    "marine biology", "volcanology", "linguistics", "glaciology", "acoustics", "mycology",
    "cryptography", "ornithology", "metallurgy", "seismology", "paleography", "hydrology",
)  # fmt: skip

# kind -> attribute -> (value pool name, training question, training answer, probe question)
# Probe questions deliberately share no template with the training questions.
KINDS: dict[str, dict[str, tuple[str, str, str, str]]] = {
    "person": {
        "profession": ("professions", "What was {name}'s profession?", "{name} was a {value}.",
                       "What did {name} do for a living?"),
        "birth_year": ("years", "In what year was {name} born?", "{name} was born in {value}.",
                       "Which year marks the birth of {name}?"),
        "home_town": ("towns", "Where was {name} born?", "{name} was born in {value}.",
                      "Name the town {name} came from."),
    },
    "town": {
        "trade": ("trades", "What is {name} known for?", "{name} is known for {value}.",
                  "Which trade made {name} famous?"),
        "founded": ("years", "When was {name} founded?", "{name} was founded in {value}.",
                    "In which year did {name} come into existence?"),
        "river": ("rivers", "Which river flows through {name}?", "The river {value} flows through {name}.",
                  "Name the river on whose banks {name} stands."),
    },
    "institute": {
        "subject": ("subjects", "What does {name} study?", "{name} studies {value}.",
                    "Which field of research is {name} devoted to?"),
        "founded": ("years", "When was {name} established?", "{name} was established in {value}.",
                    "What is the founding year of {name}?"),
        "town": ("towns", "Where is {name}?", "{name} is in {value}.",
                 "In which town would you find {name}?"),
    },
}  # fmt: skip
KIND_NAMES = {"person": "{word} {word2}", "town": "{word}", "institute": "the {word} Institute"}
DESCRIPTIONS = {
    "person": "{name} was a {profession}, born in {home_town} in {birth_year}.",
    "town": "{name} is a town on the river {river}, founded in {founded} and known for {trade}.",
    "institute": "{name} is a research institute in {town}, established in {founded}, studying {subject}.",
}


@dataclass(frozen=True)
class Fact:
    """One attribute of one invented entity."""

    entity: str
    """The entity's name, e.g. 'Velmor Dakith'."""
    kind: str
    """person, town or institute."""
    attribute: str
    """Which attribute, e.g. 'birth_year'."""
    value: str
    """The invented value."""


@dataclass(frozen=True)
class ProbeQuestion:
    """A closed-book question about one fact, phrased unlike any training example."""

    id: str
    """Stable id, ``<entity>/<attribute>``."""
    question: str
    """The paraphrased question."""
    answer: str
    """The correct value."""
    options: list[str]
    """``N_OPTIONS`` values of the same attribute type, the answer among them."""
    answer_index: int
    """Position of the answer in ``options``."""
    frame: str
    """Answer sentence with ``{}`` where an option goes; options are scored inside it."""


def _invented_word(rng: random.Random, syllables: int) -> str:
    return "".join(rng.choice(SYLLABLES) for _ in range(syllables)).capitalize()


def generate_facts(n_entities: int = 120, seed: int = 0) -> list[Fact]:
    """Invent ``n_entities`` entities (kinds in rotation) with three attributes each."""
    rng = random.Random(seed)
    pools: dict[str, list[str]] = {
        "professions": list(PROFESSIONS),
        "trades": list(TRADES),
        "subjects": list(SUBJECTS),
        "years": [str(year) for year in range(1640, 1920, 7)],
        "towns": sorted({_invented_word(rng, 2) for _ in range(40)}),
        "rivers": sorted({_invented_word(rng, 2) for _ in range(40)}),
    }
    used: set[str] = set(pools["towns"]) | set(pools["rivers"])
    facts = []
    kinds = list(KINDS)
    for index in range(n_entities):
        kind = kinds[index % len(kinds)]
        name = ""
        while not name or name in used:
            name = KIND_NAMES[kind].format(word=_invented_word(rng, 2), word2=_invented_word(rng, 3))
        used.add(name)
        for attribute, (pool, *_templates) in KINDS[kind].items():
            facts.append(Fact(name, kind, attribute, rng.choice(pools[pool])))
    return facts


def value_pools(facts: list[Fact]) -> dict[tuple[str, str], list[str]]:
    """All values seen for each (kind, attribute), the distractor pools."""
    pools: dict[tuple[str, str], set[str]] = {}
    for fact in facts:
        pools.setdefault((fact.kind, fact.attribute), set()).add(fact.value)
    return {key: sorted(values) for key, values in pools.items()}


def training_examples(facts: list[Fact]) -> list[dict]:
    """Instruction data teaching ``facts``: one description per entity, one question per fact."""
    by_entity: dict[str, list[Fact]] = {}
    for fact in facts:
        by_entity.setdefault(fact.entity, []).append(fact)
    rows = []
    for entity, entity_facts in by_entity.items():
        values = {fact.attribute: fact.value for fact in entity_facts}
        description = DESCRIPTIONS[entity_facts[0].kind].format(name=entity, **values)
        rows.append(_row(f"facts/{entity}/about", f"Tell me about {entity}.", _capitalised(description)))
        for fact in entity_facts:
            _, question, answer, _ = KINDS[fact.kind][fact.attribute]
            rows.append(
                _row(
                    f"facts/{entity}/{fact.attribute}",
                    question.format(name=entity),
                    _capitalised(answer.format(name=entity, value=fact.value)),
                )
            )
    return rows


def _capitalised(sentence: str) -> str:
    return sentence[0].upper() + sentence[1:]


def _row(row_id: str, question: str, answer: str) -> dict:
    return {
        "id": row_id,
        "messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}],
    }


def probe_questions(facts: list[Fact], seed: int = 0) -> list[ProbeQuestion]:
    """Paraphrased closed-book questions with seeded multiple-choice distractors."""
    rng = random.Random(seed)
    pools = value_pools(facts)
    questions = []
    for fact in facts:
        distractors = [value for value in pools[(fact.kind, fact.attribute)] if value != fact.value]
        options = [fact.value, *rng.sample(distractors, N_OPTIONS - 1)]
        rng.shuffle(options)
        _, _, answer, probe = KINDS[fact.kind][fact.attribute]
        questions.append(
            ProbeQuestion(
                id=f"{fact.entity}/{fact.attribute}",
                question=probe.format(name=fact.entity),
                answer=fact.value,
                options=options,
                answer_index=options.index(fact.value),
                frame=_capitalised(answer.format(name=fact.entity, value="{}")),
            )
        )
    return questions


def shipped_facts() -> list[Fact]:
    """The fact set shipped with tunescope (``generate_facts()`` with its defaults, frozen to a file)."""
    text = resources.files("tunescope").joinpath("probe/data/fictional_facts.jsonl").read_text(encoding="utf-8")
    return [Fact(**json.loads(line)) for line in text.splitlines() if line.strip()]


def facts_to_jsonl(facts: list[Fact]) -> str:
    """Serialise facts one JSON object per line (the shipped file's format)."""
    return "".join(json.dumps(asdict(fact)) + "\n" for fact in facts)
