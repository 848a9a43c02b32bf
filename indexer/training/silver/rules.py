"""What the silver annotator counts as a span and as a type: word lists, lexicographer files,
the WordNet classes of the gold phrases, and the settings of one annotation run."""

from __future__ import annotations

from dataclasses import dataclass

from ...evaluation.heldout import DEV_EVAL_TYPES

# lexicographer files whose common nouns become spans: things a retrieval query could name
SPAN_LEXNAMES = frozenset({
    "noun.animal", "noun.artifact", "noun.body", "noun.food", "noun.location", "noun.object",
    "noun.person", "noun.plant", "noun.substance", "noun.group", "noun.event", "noun.communication",
    "noun.phenomenon", "noun.Tops",  # Tops: plant, animal, food (the generic ones fail min depth)
})  # fmt: skip

# abstract synsets that are never type phrases (besides everything within 2 levels of entity.n.01)
SKIP_TYPES = frozenset({
    "whole.n.02", "part.n.01", "part.n.02", "part.n.03", "thing.n.09", "thing.n.12", "unit.n.05",
    "instrumentality.n.03", "living_thing.n.01", "physical_object.n.01", "collection.n.01",
    "state.n.02", "quality.n.01", "trait.n.01", "property.n.02", "subject.n.02", "abstraction.n.06",
    "people.n.01", "social_group.n.01", "content.n.05", "matter.n.03", "material.n.01",
    "being.n.01", "organism.n.01", "relation.n.01", "artifact.n.01",
    "causal_agent.n.01", "communication.n.02", "written_communication.n.01",
})  # fmt: skip

# words that are never silver spans: function words, pronouns, and nouns too generic to be a type
STOPWORDS = frozenset("""
a an the this that these those my your his her its our their some any every each no all both
either neither other another such what which who whom whose whatever whoever i me you he she it we
us they them mine yours hers ours theirs myself yourself himself herself itself ourselves themselves
be am is are was were been being have has had do does did will would shall should can could may
might must ought and or but nor so yet for of in on at by to from with about as into onto upon than
then there here when where why how not too very just also only even still again ever never now
one two three four five six seven eight nine ten first second third last next new old much many
more most less least few lot lots thing things stuff way ways time times day days year years week
man men woman women people person persons someone somebody something anything everything nothing
kind kinds sort type part parts place places side end lol lmao omg rt http https www com co amp
im dont cant wont gonna wanna yeah yes ok okay hey hi thanks thank please good great best bad well
like love hate get got make made go going gone come back out up down over off around through
""".split())  # fmt: skip

DETERMINERS = frozenset(
    "a an the this that these those my your his her its our their some any every each no "
    "another several many few its one two three".split()
)
SUBJECTS = frozenset("i you we they he she it who to will would can could should must may might".split())

# gold phrase -> (WordNet synsets, exact). exact: the phrase names those synsets; otherwise it is a
# narrower class under them (a public corporation is a corporation)
GOLD_SYNSETS: dict[str, tuple[tuple[str, ...], bool]] = {
    "person": (("person.n.01",), True),
    "politician": (("politician.n.01", "politician.n.02"), True),
    "artist": (("artist.n.01",), True),
    "athlete": (("athlete.n.01",), True),
    "scientist": (("scientist.n.01",), True),
    "cleric": (("cleric.n.01",), True),
    "sports manager": (("person.n.01",), False),
    "human settlement": (("geographical_area.n.01",), False),
    "facility": (("facility.n.01",), True),
    "station": (("station.n.01",), True),
    "location": (("location.n.01",), True),
    "written work": (("writing.n.02",), True),
    "musical work": (("musical_composition.n.01",), True),
    "art work": (("work_of_art.n.01",), True),
    "software": (("software.n.01",), True),
    "musical group": (("musical_organization.n.01",), True),
    "public corporation": (("corporation.n.01",), False),
    "private corporation": (("corporation.n.01",), False),
    "aerospace manufacturer": (("manufacturer.n.01",), False),
    "car manufacturer": (("manufacturer.n.01",), False),
    "sports team": (("team.n.01",), False),
    "organization": (("organization.n.01",), True),
    "group": (("group.n.01",), True),
    "corporation": (("corporation.n.01",), True),
    "clothing": (("clothing.n.01",), True),
    "vehicle": (("vehicle.n.01",), True),
    "food": (("food.n.01", "food.n.02"), True),
    "drink": (("beverage.n.01",), True),
    "product": (("merchandise.n.01", "product.n.02"), True),
}


@dataclass
class SilverConfig:
    """How silver spans are found and typed; recorded in the summary."""

    max_depth: int = 4  # hypernym levels above a span's synset that give type phrases
    max_span_width: int = 8  # words; from the model folder
    prior_weight: float = 0.03  # weight of log SemCor share against gloss cosine (docs/silver.md)
    disambiguate: bool = True  # False: WordNet's first sense (the baseline of the issue)
    hold_out: tuple[str, ...] = DEV_EVAL_TYPES  # never used as types
    min_synset_depth: int = 4  # common-noun senses shallower than this are too generic for a span
    drop_modifiers: bool = True  # "football club": no span for "football" before another noun span

