"""Write loadbench/workload/corpus.txt: English-like filler text for prompts of a set length.

Generated, not copied: sentences drawn by a seeded generator from a small grammar over
common English words written out below, so the corpus is free of anyone's copyright and
the same bytes come out every time (``python scenarios/data/make_corpus.py``). It reads
like plain prose to a tokenizer (about 1.3 tokens per word on BPE vocabularies), which is
all a load test needs from it: the server's work depends on the number of tokens, not on
their meaning.
"""

from __future__ import annotations

import random
from pathlib import Path

SEED = 20240613
PARAGRAPHS = 450

NOUNS = [
    "river",
    "city",
    "garden",
    "window",
    "teacher",
    "market",
    "road",
    "letter",
    "village",
    "mountain",
    "farmer",
    "engine",
    "bridge",
    "island",
    "winter",
    "summer",
    "morning",
    "evening",
    "kitchen",
    "library",
    "station",
    "harbour",
    "forest",
    "lamp",
    "table",
    "book",
    "door",
    "horse",
    "ship",
    "field",
    "valley",
    "school",
    "doctor",
    "friend",
    "brother",
    "sister",
    "mother",
    "father",
    "child",
    "student",
    "painter",
    "baker",
    "sailor",
    "soldier",
    "stranger",
    "neighbour",
    "king",
    "queen",
    "castle",
    "tower",
    "wall",
    "gate",
    "street",
    "house",
    "room",
    "chair",
    "clock",
    "bell",
    "candle",
    "fire",
    "storm",
    "rain",
    "wind",
    "cloud",
    "river",
    "stone",
    "bread",
    "apple",
    "orange",
    "basket",
    "bottle",
    "coat",
    "hat",
    "shoe",
    "boot",
    "ribbon",
    "song",
    "story",
    "question",
    "answer",
    "problem",
    "reason",
    "idea",
    "plan",
    "journey",
    "voyage",
    "map",
    "compass",
    "lantern",
    "mirror",
    "picture",
    "painting",
    "music",
    "dance",
    "game",
    "festival",
    "holiday",
    "harvest",
    "meadow",
    "hill",
    "lake",
    "sea",
    "coast",
    "shore",
    "cliff",
    "path",
    "trail",
    "bench",
    "fountain",
    "square",
    "church",
    "chapel",
    "mill",
    "barn",
    "fence",
    "orchard",
]
ADJECTIVES = [
    "old",
    "young",
    "quiet",
    "busy",
    "bright",
    "dark",
    "small",
    "large",
    "warm",
    "cold",
    "early",
    "late",
    "gentle",
    "careful",
    "patient",
    "curious",
    "honest",
    "clever",
    "simple",
    "strange",
    "familiar",
    "distant",
    "narrow",
    "wide",
    "tall",
    "short",
    "heavy",
    "light",
    "soft",
    "hard",
    "green",
    "blue",
    "red",
    "golden",
    "silver",
    "grey",
    "white",
    "black",
    "round",
    "square",
    "sudden",
    "slow",
    "quick",
    "calm",
    "happy",
    "tired",
    "hungry",
    "brave",
    "shy",
    "proud",
    "kind",
    "wise",
    "plain",
    "rich",
    "poor",
    "empty",
    "full",
    "open",
    "closed",
    "long",
    "brief",
    "fresh",
    "ancient",
    "modern",
    "clean",
    "dusty",
    "wet",
    "dry",
]
VERBS_PAST = [
    "walked",
    "carried",
    "opened",
    "closed",
    "watched",
    "followed",
    "crossed",
    "painted",
    "counted",
    "visited",
    "found",
    "left",
    "built",
    "mended",
    "cleaned",
    "gathered",
    "noticed",
    "remembered",
    "answered",
    "asked",
    "wrote",
    "read",
    "sang",
    "called",
    "carried",
    "pulled",
    "pushed",
    "lifted",
    "dropped",
    "turned",
    "reached",
    "passed",
    "kept",
    "held",
    "brought",
]
VERBS_PRESENT = [
    "walks",
    "carries",
    "opens",
    "closes",
    "watches",
    "follows",
    "crosses",
    "paints",
    "counts",
    "visits",
    "finds",
    "leaves",
    "builds",
    "mends",
    "cleans",
    "gathers",
    "notices",
    "remembers",
    "answers",
    "asks",
    "writes",
    "reads",
    "sings",
    "calls",
]
ADVERBS = [
    "slowly",
    "quickly",
    "quietly",
    "carefully",
    "gladly",
    "softly",
    "early",
    "later",
    "often",
    "seldom",
    "always",
    "never",
    "again",
    "together",
    "alone",
    "nearly",
    "almost",
    "suddenly",
    "gently",
    "patiently",
]
PREPOSITIONS = [
    "near",
    "beside",
    "behind",
    "across",
    "under",
    "over",
    "through",
    "along",
    "past",
    "beyond",
    "toward",
]
CONNECTIVES = (
    "Then",
    "Later",
    "After that",
    "Meanwhile",
    "Soon afterwards",
    "In the morning",
    "By evening",
    "Before long",
    "At first",
    "Once more",
)
NAMES = [
    "Anna",
    "Ben",
    "Clara",
    "David",
    "Elena",
    "Frank",
    "Grace",
    "Henry",
    "Iris",
    "James",
    "Kate",
    "Leo",
    "Maria",
    "Noah",
    "Olive",
    "Paul",
    "Rosa",
    "Sam",
    "Tara",
    "Victor",
]


def _noun_phrase(rng: random.Random) -> str:
    noun = rng.choice(NOUNS)
    if rng.random() < 0.5:
        noun = f"{rng.choice(ADJECTIVES)} {noun}"
    article = rng.choice(("the", "the", "a", "every", "one"))
    if article == "a" and noun[0] in "aeiou":
        article = "an"
    return f"{article} {noun}"


def _sentence(rng: random.Random) -> str:
    subject = rng.choice(NAMES) if rng.random() < 0.4 else _noun_phrase(rng)
    shape = rng.randrange(5)
    if shape == 0:
        body = f"{subject} {rng.choice(VERBS_PAST)} {_noun_phrase(rng)}"
    elif shape == 1:
        body = (
            f"{subject} {rng.choice(VERBS_PAST)} {_noun_phrase(rng)} "
            f"{rng.choice(PREPOSITIONS)} {_noun_phrase(rng)}"
        )
    elif shape == 2:
        body = f"{subject} {rng.choice(VERBS_PRESENT)} {_noun_phrase(rng)} {rng.choice(ADVERBS)}"
    elif shape == 3:
        body = (
            f"{subject} was {rng.choice(ADJECTIVES)} and {rng.choice(ADJECTIVES)}, "
            f"and {_noun_phrase(rng)} {rng.choice(VERBS_PAST)} {_noun_phrase(rng)}"
        )
    else:
        lead = rng.choice(CONNECTIVES)
        body = f"{lead} {subject} {rng.choice(VERBS_PAST)} {rng.choice(PREPOSITIONS)} " + (
            _noun_phrase(rng)
        )
        return body[0].upper() + body[1:] + "."
    return body[0].upper() + body[1:] + rng.choice(".....?!")


def corpus(seed: int = SEED, paragraphs: int = PARAGRAPHS) -> str:
    rng = random.Random(seed)
    out = []
    for _ in range(paragraphs):
        out.append(" ".join(_sentence(rng) for _ in range(rng.randint(3, 9))))
    return "\n\n".join(out) + "\n"


def main() -> None:
    target = Path(__file__).resolve().parents[2] / "loadbench" / "workload" / "corpus.txt"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(corpus(), encoding="utf-8")
    print(f"wrote {target} ({target.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
