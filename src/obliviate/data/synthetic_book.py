"""A made-up novel for copyright-unlearning experiments that no pretrained model has read.

Unlearning a famous book is hard to judge: the model may recite it from pretraining, so a low
leak rate after unlearning cannot be told apart from a model that never learnt the fine-tuned
copy. A generated book avoids that. Names of people, towns, rivers and houses are built from
random syllables, and events are written from sentence templates filled with varied verbs,
objects, times and moods, so the text reads like (plain) prose but exists nowhere else.

The text is formulaic: sentences of different paragraphs often share a template, so BLEU between
unrelated sentences runs high at the top end (for seed 0 the 0.99 quantile is about 0.5, against
about 0.035 for Paradise Lost). A leak-rate threshold calibrated on this book is therefore strict,
and token-level measures (exact memorisation, extraction strength) are the sharper test here.

Everything is drawn from one ``random.Random(seed)``: the same seed and sizes give the same book,
byte for byte, on any machine and Python version (``random.Random`` with an int seed is stable
across versions for ``choice``, ``randrange``, ``shuffle`` and ``sample``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from obliviate.data.text import Passage

_ONSETS = ["b", "br", "c", "d", "dr", "f", "g", "gr", "h", "k", "l", "m", "n", "p", "r", "s", "t",
           "th", "v", "w", "z", "sh", "", ""]
_VOWELS = ["a", "e", "i", "o", "u", "a", "e", "o", "ae", "ei", "ou"]
_CODAS = ["", "", "", "", "n", "r", "l", "s", "th", "m", "nd", "rk", "st"]
_PLACE_ENDINGS = ["ford", "holm", "wick", "mere", "stead", "vale", "bury", "haven", "moor", "crag"]

_ROLES = ["the ferry keeper", "the clockmaker", "a travelling cartographer", "the youngest archivist",
          "the salt merchant", "a retired lighthouse warden", "the glassblower", "the village healer",
          "a disgraced fencing master", "the beekeeper", "the night porter", "a court translator"]
_TRAITS = ["patient", "restless", "stubborn", "soft-spoken", "quick-tempered", "careful", "proud",
           "curious", "weary", "cheerful", "secretive", "gentle"]
_OBJECTS = ["a brass compass", "a sealed letter", "a ledger bound in green leather", "a cracked lantern",
            "a map drawn on sailcloth", "a silver thimble", "a box of pressed ferns", "an unfinished quilt",
            "a key with three teeth", "a jar of amber honey", "a bundle of tally sticks", "a wooden flute",
            "a ring of tarnished copper", "a cage with no bird in it", "a coil of tarred rope"]
_WEATHER = ["a thin rain drifted over the rooftops", "the wind came hard off the marshes",
            "fog sat low in the streets", "the sky was the colour of old pewter",
            "a late sun warmed the stones of the square", "snow had begun to settle on the hedges",
            "the air smelled of cut hay and woodsmoke", "thunder grumbled somewhere beyond the hills"]
_TIMES = ["At first light", "Before noon", "Late that afternoon", "Long after supper",
          "On the third morning", "When the bells had stopped", "Near midnight", "By the end of the week"]
_FEELINGS = ["relief", "a slow dread", "quiet pride", "an old grief", "a flicker of hope", "shame",
             "impatience", "something close to joy", "unease", "a tired kind of anger"]
# Past tense and past participle, so that "had hidden" and "hid" both read right.
_VERBS = [("carried", "carried"), ("hid", "hidden"), ("mended", "mended"), ("sold", "sold"),
          ("buried", "buried"), ("polished", "polished"), ("weighed", "weighed"), ("copied", "copied"),
          ("pawned", "pawned"), ("wrapped", "wrapped"), ("hoarded", "hoarded"),
          ("stole", "stolen"), ("broke", "broken"), ("returned", "returned")]
_MOTIONS = ["walked", "rode", "rowed", "hurried", "wandered", "climbed", "limped", "drove the cart"]
_PLACE_KINDS = ["the mill at", "the harbour of", "the chapel above", "the orchards of", "the market in",
                "the ruined tower near", "the inn at", "the ferry landing below", "the tannery of"]
_SPEECH = ["said", "whispered", "muttered", "called out", "admitted", "insisted", "replied"]
_LINES = ["Nothing here is what it was", "We should have left before the thaw",
          "Bring the lamp closer", "Half of this town is built on borrowed money",
          "My father never trusted the tide tables", "Burn it, or give it to me",
          "Someone has been reading my letters", "The mill will not turn again this year",
          "Keep it safe until I come back", "I know what you took from the archive",
          "The river remembers every promise", "There is still time to change the ledger",
          "You were never meant to find this", "Tell no one where the road turns"]
_CONNECTIVES = ["Even so,", "For a while,", "In the end,", "Meanwhile,", "Afterwards,", "Still,",
                "All the same,", "Without a word,"]
_CHAPTER_NOUNS = ["Lantern", "Ledger", "Ferry", "Storm", "Orchard", "Bell", "Thaw", "Key", "Tower",
                  "Harvest", "Letter", "Flood", "Market", "Crossing", "Winter", "Archive"]
_BOOK_FORMS = ["The {noun} of {place}", "A {noun} at {place}", "{name} of {place}"]
_CHAPTER_FORMS = ["The {noun} of {place}", "A {noun} for {name}", "{name} and the {noun}",
                  "After the {noun}", "The Last {noun}", "What {name} Kept"]


@dataclass
class Character:
    name: str
    role: str
    trait: str
    pronoun: str  # "he" or "she"

    @property
    def possessive(self) -> str:
        return "his" if self.pronoun == "he" else "her"


@dataclass
class Chapter:
    number: int
    title: str
    paragraphs: list[str]

    @property
    def heading(self) -> str:
        return f"Chapter {self.number}: {self.title}"


@dataclass
class Book:
    """A generated novel. ``text`` is headings and paragraphs separated by blank lines."""

    title: str
    seed: int
    characters: list[Character]
    places: list[str]
    chapters: list[Chapter] = field(default_factory=list)

    @property
    def text(self) -> str:
        parts = [self.title]
        for chapter in self.chapters:
            parts.append(chapter.heading)
            parts.extend(chapter.paragraphs)
        return "\n\n".join(parts) + "\n"

    def passages(self) -> list[Passage]:
        """One passage per paragraph; ``chapter`` is the chapter heading, ids ``c01p03``."""
        return [
            Passage(f"c{ch.number:02d}p{i:02d}", paragraph, ch.heading)
            for ch in self.chapters
            for i, paragraph in enumerate(ch.paragraphs)
        ]


def _word(rng: random.Random, syllables: int) -> str:
    parts = []
    for _ in range(syllables):
        parts.append(rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS))
    return "".join(parts).capitalize()


def _unique_names(rng: random.Random, count: int, make) -> list[str]:
    names: list[str] = []
    while len(names) < count:
        name = make()
        if name not in names and 4 <= len(name) <= 12:
            names.append(name)
    return names


class _Writer:
    """Sentence generators that share the book's random stream and cast."""

    def __init__(self, rng: random.Random, cast: list[Character], places: list[str]):
        self.rng = rng
        self.cast = cast
        self.places = places

    def pick(self, options):
        return self.rng.choice(options)

    def opening(self, who: Character, where: str) -> str:
        r = self.pick
        forms = [
            f"{r(_TIMES)}, {who.name} {r(_MOTIONS)} to {r(_PLACE_KINDS)} {where}, and {r(_WEATHER)}.",
            f"{r(_WEATHER).capitalize()} when {who.name}, {who.role}, reached {r(_PLACE_KINDS)} {where}.",
            f"{who.name} had not been to {where} since the spring of the great flood, and {r(_WEATHER)}.",
            f"The road into {where} was longer than {who.name} remembered, and {r(_WEATHER)}.",
            f"{r(_TIMES)} the bells of {where} rang out of turn, and {who.name} stopped to listen.",
            f"It was {who.name}'s first winter as {who.role}, and {where} seemed smaller than before.",
            f"{r(_TIMES)}, with {r(_OBJECTS)} under one arm, {who.name} knocked at {r(_PLACE_KINDS)} {where}.",
            f"Everyone in {where} knew {who.name}, {who.role}, though few could say they liked {'him' if who.pronoun == 'he' else 'her'}.",
        ]
        return r(forms)

    def event(self, who: Character, other: Character, where: str, avoid: int | None = None) -> tuple[int, str]:
        """One event sentence and the index of its template (never ``avoid``)."""
        r = self.pick
        forms = [
            f"{who.pronoun.capitalize()} found {r(_OBJECTS)} beneath the floorboards and {r(_VERBS)[0]} it before anyone saw.",
            f"{other.name}, who was {other.trait} by nature, had {r(_VERBS)[1]} {r(_OBJECTS)} the night before.",
            f"In the back room {who.name} and {other.name} argued over {r(_OBJECTS)} until the candles burned low.",
            f"{who.name} counted the coins twice, then {r(_VERBS)[0]} {r(_OBJECTS)} and paid the debt to {other.name}.",
            f"Nobody in {where} would speak of the fire, though {other.name} had seen it from the bridge.",
            f"{other.name} {r(_MOTIONS)} out along the causeway carrying {r(_OBJECTS)}, and did not look back.",
            f"The people of {where} still owed {other.name} for the winter, and {who.name} knew it.",
            f"Behind the counter lay {r(_OBJECTS)}, which {other.name} swore had belonged to {who.name}'s mother.",
            f"{who.name} {r(_VERBS)[0]} {r(_OBJECTS)} while {other.name} kept watch at the door.",
            f"Twice that week {other.name} came asking for {r(_OBJECTS)}, and twice {who.name} sent {'him' if other.pronoun == 'he' else 'her'} away.",
            f"A stranger from {r(self.places)} had left {r(_OBJECTS)} on the step, and nobody claimed it.",
            f"{other.name} wrote the date in chalk on the door of {r(_PLACE_KINDS)} {where}.",
            f"The ferry had not crossed for nine days, so {who.name} and {other.name} shared what bread was left.",
            f"Under the eaves hung {r(_OBJECTS)}, swaying each time the door of the {r(['kitchen', 'workshop', 'stable', 'cellar'])} opened.",
        ]
        choices = [i for i in range(len(forms)) if i != avoid]
        index = r(choices)
        return index, forms[index]

    def speech(self, who: Character, other: Character) -> str:
        r = self.pick
        line = r(_LINES)
        forms = [
            f"\"{line},\" {who.name} {r(_SPEECH)}, turning {r(_OBJECTS)} over in {who.possessive} hands.",
            f"\"{line},\" {r(_SPEECH)} {other.name}, and for a moment nobody moved.",
            f"{who.name} looked at {other.name} for a long time. \"{line}.\"",
            f"\"{line},\" {other.name} said. \"Do you hear me?\"",
            f"When at last {who.name} spoke, {who.pronoun} kept {who.possessive} voice low: \"{line}.\"",
            f"\"{line},\" {who.name} {r(_SPEECH)} to nobody in particular.",
        ]
        return r(forms)

    def feeling(self, who: Character) -> str:
        r = self.pick
        forms = [
            f"{r(_CONNECTIVES)} {who.name} felt {r(_FEELINGS)}, and was {who.trait} enough to hide it.",
            f"What {who.pronoun} felt then was {r(_FEELINGS)}, though {who.pronoun} could not have said why.",
            f"{r(_CONNECTIVES)} the house grew quiet, and {who.name} sat by the window with {r(_FEELINGS)}.",
            f"{who.name} was too {who.trait} to cry, but {r(_FEELINGS)} kept {'him' if who.pronoun == 'he' else 'her'} awake.",
            f"{r(_CONNECTIVES)} {who.pronoun} walked the length of the quay twice before going home.",
            f"Years later {who.name} would remember that evening with {r(_FEELINGS)}.",
        ]
        return r(forms)

    def paragraph(self) -> str:
        who, other = self.rng.sample(self.cast, 2)
        where = self.pick(self.places)
        shape, first_event = self.event(who, other, where)
        middle = [first_event, self.speech(who, other), self.feeling(who)]
        self.rng.shuffle(middle)
        # A second event never repeats the first one's template: the same shape twice reads badly.
        extra = [self.event(other, who, where, avoid=shape)[1]] if self.rng.random() < 0.5 else []
        return " ".join([self.opening(who, where), *middle[: 2 + self.rng.randrange(2)], *extra])


def generate_book(seed: int = 0, chapters: int = 8, paragraphs_per_chapter: int = 6) -> Book:
    """Write a deterministic novel of ``chapters`` x ``paragraphs_per_chapter`` paragraphs.

    Each paragraph has three to six sentences (about 220-550 characters), enough for a
    200-character prompt and a continuation.
    """
    if chapters < 1 or paragraphs_per_chapter < 1:
        raise ValueError("a book needs at least one chapter and one paragraph per chapter")
    rng = random.Random(seed)
    names = _unique_names(rng, 8, lambda: _word(rng, rng.choice([2, 2, 3])))
    cast = [
        Character(name, role, trait, rng.choice(["he", "she"]))
        for name, role, trait in zip(names, rng.sample(_ROLES, 8), rng.choices(_TRAITS, k=8))
    ]
    places = _unique_names(rng, 6, lambda: _word(rng, rng.choice([1, 2])) + rng.choice(_PLACE_ENDINGS))
    writer = _Writer(rng, cast, places)
    title = rng.choice(_BOOK_FORMS).format(noun=rng.choice(_CHAPTER_NOUNS), place=places[0], name=cast[0].name)
    book = Book(title=title, seed=seed, characters=cast, places=places)
    for number in range(1, chapters + 1):
        title = rng.choice(_CHAPTER_FORMS).format(
            noun=rng.choice(_CHAPTER_NOUNS), place=rng.choice(places), name=rng.choice(cast).name
        )
        paragraphs = [writer.paragraph() for _ in range(paragraphs_per_chapter)]
        book.chapters.append(Chapter(number, title, paragraphs))
    return book
