"""Fictional facts: knowledge no base model can have, for measuring what tuning teaches.

A seeded generator invents entities (people, towns, institutes) with three attributes each, then
writes them three ways: as instruction data to train on (a description and one question per
attribute, in *training* wording), as encyclopedia articles for continued pre-training (prose in a
third wording, :func:`encyclopedia_articles`), and as closed-book probe questions in *different*
wording (both the question and the scored answer sentence), each with four multiple-choice options.

The probe is built so that it cannot be passed without knowing the facts (:func:`question_sets`):

* every option of a question is a value of the same attribute that the probed runs were *taught*,
  so recognising "values seen in training" gives no advantage;
* each taught value is the answer of exactly one question of its attribute, and the distractors are
  drawn uniformly from the other taught values, so any preference over values alone (for the ones
  seen most often, say) lands at the chance rate on average;
* a *control* question about an invented entity never taught, with exactly the same options and
  answer, is paired with every question: its accuracy is what a model reaches without the fact;
* the same question in the *training wording* (training question, training answer sentence) is the
  probe's positive control: memorised training sentences show up there first.
"""

from __future__ import annotations

import hashlib
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
# Each pool holds more values than there are entities of a kind (40 by default), so every fact of an
# attribute can get its own value: then every taught fact is the answer of one probe question (the
# probe asks one question per distinct taught value), and a run taught more facts gets more questions.
PROFESSIONS = (
    "cartographer", "glassblower", "astronomer", "clockmaker", "botanist", "shipwright", "composer",
    "beekeeper", "engraver", "physician", "architect", "weaver", "chemist", "lighthouse keeper",
    "bookbinder", "blacksmith", "cooper", "tanner", "potter", "sculptor", "locksmith", "surveyor",
    "apothecary", "silversmith", "stonemason", "printer", "tailor", "violin maker", "candlemaker",
    "brewer", "miller", "goldsmith", "saddler", "perfumer", "wheelwright", "falconer", "mathematician",
    "geologist", "librarian", "translator", "navigator", "glazier", "rope maker", "organ builder",
)  # fmt: skip
TRADES = (
    "copper mining", "lace making", "salt trading", "tulip farming", "silk dyeing", "bell casting",
    "paper milling", "oyster fishing", "wool spinning", "glass polishing", "horse breeding", "cider pressing",
    "cheese making", "tin smelting", "barrel making", "amber carving", "linen weaving", "honey gathering",
    "olive pressing", "marble quarrying", "leather tanning", "pottery firing", "candle making",
    "herring curing", "saffron growing", "peat cutting", "timber rafting", "pearl diving", "indigo dyeing",
    "soap boiling", "brick making", "coal mining", "tea blending", "felt making", "pewter casting",
    "carpet knotting", "porcelain painting", "iron forging", "hop growing", "flax retting", "ink grinding",
    "slate splitting", "cork harvesting", "mustard milling",
)  # fmt: skip
SUBJECTS = (
    "marine biology", "volcanology", "linguistics", "glaciology", "acoustics", "mycology",
    "cryptography", "ornithology", "metallurgy", "seismology", "paleography", "hydrology",
    "entomology", "astrophysics", "meteorology", "oceanography", "epidemiology", "archaeology",
    "numismatics", "optics", "crystallography", "limnology", "herpetology", "ichthyology", "virology",
    "immunology", "genetics", "thermodynamics", "geomorphology", "paleontology", "toxicology",
    "pharmacology", "ecology", "topology", "horology", "phonetics", "lichenology", "speleology",
    "dendrology", "soil science", "tribology", "rheology", "glassmaking chemistry", "bryology",
)  # fmt: skip
YEARS = tuple(str(year) for year in range(1604, 1920, 7))
"""Invented birth and founding years (46 of them)."""
INVENTED_POOL_SIZE = 48
"""Invented town and river names generated per pool."""


@dataclass(frozen=True)
class Wording:
    """How one attribute is taught and how it is probed; the two share no phrasing."""

    pool: str
    """Name of the value pool the attribute draws from (a year, a town, a profession, ...)."""
    training_question: str
    """The question of the training example, with ``{name}``."""
    training_answer: str
    """The training answer sentence, with ``{name}`` and ``{value}``."""
    probe_question: str
    """The probe's paraphrased question."""
    probe_answer: str
    """The probe's scored answer frame: shares no two consecutive words with any training sentence of its kind."""


KINDS: dict[str, dict[str, Wording]] = {
    "person": {
        "profession": Wording("professions", "What was {name}'s profession?", "{name} was a {value}.",
                              "What did {name} do for a living?", "Occupation of {name}: {value}."),
        "birth_year": Wording("years", "In what year was {name} born?", "{name} was born in {value}.",
                              "Which year marks the birth of {name}?", "{name}'s year of birth: {value}."),
        "home_town": Wording("towns", "Where was {name} born?", "{name} was born in {value}.",
                             "Name the town {name} came from.", "{name}'s home town: {value}."),
    },
    "town": {
        "trade": Wording("trades", "What is {name} known for?", "{name} is known for {value}.",
                         "Which trade made {name} famous?", "{name}'s chief industry: {value}."),
        "founded": Wording("years", "When was {name} founded?", "{name} was founded in {value}.",
                           "In which year did {name} come into existence?", "{name}'s founding year: {value}."),
        "river": Wording("rivers", "Which river flows through {name}?", "The river {value} flows through {name}.",
                         "Name the river on whose banks {name} stands.", "{name} stands beside the {value}."),
    },
    "institute": {
        "subject": Wording("subjects", "What does {name} study?", "{name} studies {value}.",
                           "Which field of research is {name} devoted to?", "{name}'s field of research: {value}."),
        "founded": Wording("years", "When was {name} established?", "{name} was established in {value}.",
                           "What is the founding year of {name}?", "{name}'s founding year: {value}."),
        "town": Wording("towns", "Where is {name}?", "{name} is in {value}.",
                        "In which town would you find {name}?", "{name}'s location: {value}."),
    },
}  # fmt: skip
"""kind -> attribute -> its training and probe wording."""
KIND_NAMES = {"person": "{word} {word2}", "town": "{word}", "institute": "the {word} Institute"}
DESCRIPTIONS = {
    "person": "{name} was a {profession}, born in {home_town} in {birth_year}.",
    "town": "{name} is a town on the river {river}, founded in {founded} and known for {trade}.",
    "institute": "{name} is a research institute in {town}, established in {founded}, studying {subject}.",
}
ARTICLES: dict[str, tuple[str, ...]] = {
    "person": (
        "{name} was {a_profession} from {home_town}, born there in {birth_year}. Parish records of {home_town} "
        "note the birth in {birth_year}, and {name} learned the craft of {a_profession} in the same streets, "
        "practising it for most of a long working life. Letters kept in the archive of {home_town} mention {name} "
        "as {a_profession} of some local reputation.",
        "Little is written about {name}, who came into the world in {birth_year} and worked as {a_profession}. "
        "The family had lived in {home_town} for generations, and {name} stayed in {home_town}, working as "
        "{a_profession}. Surviving accounts call {name} a careful {profession} whose work was valued across the "
        "region, and the parish register of {home_town} records the birth in {birth_year}.",
    ),
    "town": (
        "{name} lies along the river {river}, which runs through the middle of the town. Settlers laid out {name} "
        "in {founded}, and from the start its people lived by {trade}. Today the quays on the river {river} still "
        "serve the workshops of {name}, where {trade} remains the main source of work. The charter of {founded} "
        "still hangs in the town hall.",
        "The town of {name} grew up in {founded} on a bend of the river {river}. For centuries {name} has depended "
        "on {trade}; travellers along the river {river} describe its markets and the families who kept up {trade} "
        "from one generation to the next. Its charter, dated {founded}, is kept in the town hall.",
    ),
    "institute": (
        "{name} opened its doors in {founded} in {town}. Researchers at {name} concentrate on {subject}, and its "
        "collections on {subject} draw visiting scholars to {town} every year. The building in {town} has housed "
        "{name} since {founded}.",
        "Scholars of {subject} know {name}, the research centre that {town} has hosted since {founded}. From its "
        "first days in {founded}, {name} has devoted its laboratories in {town} to {subject}, publishing a yearly "
        "bulletin on {subject}.",
    ),
}
"""kind -> article templates (one is chosen per entity, seeded): prose that states each attribute twice, in
words shared with neither the training sentences nor the probe's scored frames (a test checks the frames)."""
ARTICLE_ATTRIBUTE = "article"
"""The last part of an article's id, ``facts/<entity>/article``: it teaches every attribute of the entity."""


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
    """A closed-book multiple-choice question about one fact."""

    id: str
    """Stable id, ``<entity>/<attribute>`` (``control/<entity>/<attribute>`` for an untaught entity)."""
    question: str
    """The question (paraphrased, or in the training wording for the positive control)."""
    answer: str
    """The correct value."""
    options: list[str]
    """``N_OPTIONS`` taught values of the same attribute, the answer among them."""
    answer_index: int
    """Position of the answer in ``options``."""
    frame: str
    """Answer sentence with ``{}`` where an option goes; options are scored inside it."""


def _invented_word(rng: random.Random, syllables: int) -> str:
    return "".join(rng.choice(SYLLABLES) for _ in range(syllables)).capitalize()


def generate_facts(n_entities: int = 120, seed: int = 0) -> list[Fact]:
    """Invent ``n_entities`` entities (kinds in rotation) with three attributes each.

    Each attribute deals its values from a shuffled deck of its pool, reshuffled only when used up,
    so the facts of an attribute all have different values while the pool lasts (40 entities of a
    kind by default, every pool larger).
    """
    rng = random.Random(seed)
    pools: dict[str, list[str]] = {
        "professions": list(PROFESSIONS),
        "trades": list(TRADES),
        "subjects": list(SUBJECTS),
        "years": list(YEARS),
        "towns": _invented_words(rng, INVENTED_POOL_SIZE, set()),
    }
    pools["rivers"] = _invented_words(rng, INVENTED_POOL_SIZE, set(pools["towns"]))
    used: set[str] = set(pools["towns"]) | set(pools["rivers"])
    decks: dict[tuple[str, str], list[str]] = {}
    facts = []
    kinds = list(KINDS)
    for index in range(n_entities):
        kind = kinds[index % len(kinds)]
        name = _new_name(rng, kind, used)
        for attribute, wording in KINDS[kind].items():
            deck = decks.setdefault((kind, attribute), [])
            if not deck:
                deck += rng.sample(pools[wording.pool], len(pools[wording.pool]))
            facts.append(Fact(name, kind, attribute, deck.pop()))
    return facts


def _invented_words(rng: random.Random, count: int, taken: set[str]) -> list[str]:
    """``count`` distinct invented two-syllable words outside ``taken``, sorted."""
    words: set[str] = set()
    while len(words) < count:
        word = _invented_word(rng, 2)
        if word not in taken:
            words.add(word)
    return sorted(words)


def _new_name(rng: random.Random, kind: str, used: set[str]) -> str:
    """An invented name of ``kind`` not in ``used`` (added to it)."""
    name = ""
    while not name or name in used:
        name = KIND_NAMES[kind].format(word=_invented_word(rng, 2), word2=_invented_word(rng, 3))
    used.add(name)
    return name


def value_pools(facts: list[Fact]) -> dict[tuple[str, str], list[str]]:
    """The distinct values of each (kind, attribute) among ``facts``, sorted."""
    pools: dict[tuple[str, str], set[str]] = {}
    for fact in facts:
        pools.setdefault((fact.kind, fact.attribute), set()).add(fact.value)
    return {key: sorted(values) for key, values in pools.items()}


def fact_id(fact: Fact) -> str:
    """``<entity>/<attribute>``, the id probe questions and taught-fact sets use."""
    return f"{fact.entity}/{fact.attribute}"


def by_entity(facts: list[Fact]) -> dict[str, list[Fact]]:
    """``facts`` grouped by entity, in the order the entities first appear."""
    grouped: dict[str, list[Fact]] = {}
    for fact in facts:
        grouped.setdefault(fact.entity, []).append(fact)
    return grouped


def training_examples(facts: list[Fact]) -> list[dict]:
    """Instruction data teaching ``facts``: one description per entity, one question per fact.

    Ids are ``facts/<entity>/about`` and ``facts/<entity>/<attribute>``; the probe reads them back
    to know which facts a run was taught.
    """
    rows = []
    for entity, entity_facts in by_entity(facts).items():
        values = {fact.attribute: fact.value for fact in entity_facts}
        description = DESCRIPTIONS[entity_facts[0].kind].format(name=entity, **values)
        rows.append(_row(f"facts/{entity}/about", f"Tell me about {entity}.", _capitalised(description)))
        for fact in entity_facts:
            wording = KINDS[fact.kind][fact.attribute]
            rows.append(
                _row(
                    f"facts/{fact_id(fact)}",
                    wording.training_question.format(name=entity),
                    _capitalised(wording.training_answer.format(name=entity, value=fact.value)),
                )
            )
    return rows


def encyclopedia_articles(facts: list[Fact], seed: int = 0) -> list[dict]:
    """``facts`` as encyclopedia articles, one per entity: records ``{"id", "text"}`` for continued pre-training.

    The wording is neither the instruction data's nor the probe's, so a model that answers the probe after
    reading the articles learnt the facts, not a sentence. Ids are ``facts/<entity>/article``, so that the
    probe knows a run that read them was taught every attribute of the entity.
    """
    rng = random.Random(f"articles-{seed}")
    rows = []
    for entity, entity_facts in by_entity(facts).items():
        values = {fact.attribute: fact.value for fact in entity_facts}
        if "profession" in values:
            article = "an" if values["profession"][0] in "aeiou" else "a"
            values["a_profession"] = f"{article} {values['profession']}"
        text = rng.choice(ARTICLES[entity_facts[0].kind]).format(name=entity, **values)
        rows.append({"id": f"facts/{entity}/{ARTICLE_ATTRIBUTE}", "text": _capitalised(text)})
    return rows


def _capitalised(sentence: str) -> str:
    return sentence[0].upper() + sentence[1:]


def _row(row_id: str, question: str, answer: str) -> dict:
    return {
        "id": row_id,
        "messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}],
    }


@dataclass(frozen=True)
class QuestionSets:
    """The probe's question sets; item ``i`` of every set asks about the same value with the same options."""

    facts: list[ProbeQuestion]
    """Paraphrased questions about taught facts, one per distinct taught value of each attribute."""
    control: list[ProbeQuestion]
    """``control[i]`` asks ``facts[i]`` about an invented entity no run was taught (ids ``control/...``)."""
    training_wording: list[ProbeQuestion]
    """``training_wording[i]`` is ``facts[i]`` asked and answered in the training sentences' words."""
    skipped: dict[str, int]
    """``kind/attribute`` -> distinct taught values, for attributes with fewer than ``N_OPTIONS`` (no questions)."""


def question_sets(facts: list[Fact], taught: set[str] | None = None, seed: int = 0) -> QuestionSets:
    """Build the probe's matched question sets for the facts in ``taught`` (all of ``facts`` when None).

    For each (kind, attribute), the pool is the distinct values of its taught facts. Each pool value
    is the answer of one question, about one taught fact with that value (a seeded choice when
    several share it); the other ``N_OPTIONS - 1`` options are drawn from the same pool. Every option
    was therefore taught as this attribute, and over the questions of an attribute every value is
    the answer exactly once, so a model choosing by the values alone scores the chance rate on
    average. An attribute with fewer than ``N_OPTIONS`` distinct taught values gets no questions
    (reported in ``skipped``) rather than options that were never taught.
    """
    rng = random.Random(seed)
    chosen = [fact for fact in facts if taught is None or fact_id(fact) in taught]
    used_names = {fact.entity for fact in facts} | {fact.value for fact in facts}
    names = random.Random(f"control-{seed}")
    holders: dict[tuple[str, str, str], list[Fact]] = {}
    for fact in sorted(chosen, key=fact_id):
        holders.setdefault((fact.kind, fact.attribute, fact.value), []).append(fact)
    sets = QuestionSets([], [], [], {})
    for (kind, attribute), pool in sorted(value_pools(chosen).items()):
        if len(pool) < N_OPTIONS:
            sets.skipped[f"{kind}/{attribute}"] = len(pool)
            continue
        wording = KINDS[kind][attribute]
        for value in pool:
            fact = rng.choice(holders[(kind, attribute, value)])
            options = [value, *rng.sample([other for other in pool if other != value], N_OPTIONS - 1)]
            rng.shuffle(options)
            stranger = _new_name(names, kind, used_names)
            probe = (wording.probe_question, wording.probe_answer, value, options)
            training = (wording.training_question, wording.training_answer, value, options)
            sets.facts.append(_question(fact_id(fact), fact.entity, *probe))
            sets.control.append(_question(f"control/{stranger}/{attribute}", stranger, *probe))
            sets.training_wording.append(_question(fact_id(fact), fact.entity, *training))
    return sets


def _question(
    question_id: str, entity: str, question: str, answer: str, value: str, options: list[str]
) -> ProbeQuestion:
    return ProbeQuestion(
        id=question_id,
        question=question.format(name=entity),
        answer=value,
        options=list(options),
        answer_index=options.index(value),
        frame=_capitalised(answer.format(name=entity, value="{}")),
    )


SHIPPED_FACTS = "probe/data/fictional_facts.jsonl"
"""The frozen fact set, inside the ``tunescope`` package."""


def _shipped_text() -> str:
    return resources.files("tunescope").joinpath(SHIPPED_FACTS).read_text(encoding="utf-8")


def shipped_facts() -> list[Fact]:
    """The fact set shipped with tunescope (``generate_facts()`` with its defaults, frozen to a file)."""
    return [Fact(**json.loads(line)) for line in _shipped_text().splitlines() if line.strip()]


def shipped_facts_digest() -> str:
    """SHA-256 of the shipped fact set: the ``facts`` asset built from another one is stale."""
    return hashlib.sha256(_shipped_text().encode("utf-8")).hexdigest()


def facts_to_jsonl(facts: list[Fact]) -> str:
    """Serialise facts one JSON object per line (the shipped file's format)."""
    return "".join(json.dumps(asdict(fact)) + "\n" for fact in facts)
