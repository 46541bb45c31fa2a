"""Write tools/agreement/sentences.txt: the text sample `make mar` checks int8 against fp32 on.

    python -m devtools.agreement_sentences

Every fragment below was written for this project and is dedicated to the public domain (CC0 1.0,
see tools/agreement/README.md), so the sample ships with the project and needs no data set. The
sentences are fragments put together by fixed templates with a fixed seed: the output is the same
on every run, and re-running it after editing a fragment shows the change as a diff. They mix
positive, negative and neutral statements, negations, contrasts, questions, short and long texts
about films, books, food, travel, devices, services and everyday life: the kinds of text a
sentiment service is sent, not one data set's style.
"""

import random
from pathlib import Path

TARGET = Path(__file__).resolve().parent.parent / "tools" / "agreement" / "sentences.txt"
COUNT = 1200
SEED = 19

THINGS = [
    ("film", "the plot", "the acting", "the soundtrack", "the ending"),
    ("novel", "the characters", "the prose", "the pacing", "the final chapter"),
    ("restaurant", "the food", "the service", "the wine list", "the dessert"),
    ("hotel", "the room", "the staff", "the breakfast", "the view"),
    ("phone", "the battery", "the camera", "the screen", "the software"),
    ("laptop", "the keyboard", "the fan", "the display", "the trackpad"),
    ("pair of headphones", "the sound", "the noise cancelling", "the fit", "the case"),
    ("app", "the interface", "the login", "the notifications", "the latest update"),
    ("train journey", "the seats", "the wifi", "the timetable", "the conductor"),
    ("flight", "the crew", "the legroom", "the boarding", "the meal"),
    ("concert", "the band", "the sound mix", "the crowd", "the encore"),
    ("video game", "the story", "the controls", "the level design", "the boss fights"),
    ("coffee shop", "the coffee", "the pastries", "the music", "the barista"),
    ("pair of running shoes", "the cushioning", "the laces", "the grip", "the sizing"),
    ("online course", "the lectures", "the exercises", "the teacher", "the final exam"),
    ("museum", "the exhibition", "the audio guide", "the gift shop", "the queue"),
    ("washing machine", "the spin cycle", "the door seal", "the noise", "the manual"),
    ("podcast", "the host", "the guests", "the editing", "the ads"),
    ("bakery", "the bread", "the croissants", "the prices", "the opening hours"),
    ("gym", "the equipment", "the trainers", "the changing rooms", "the classes"),
    ("TV series", "the first season", "the writing", "the cast", "the finale"),
    ("delivery service", "the driver", "the tracking", "the packaging", "the refund"),
    ("camping trip", "the campsite", "the weather", "the trail", "the tent"),
    ("board game", "the rules", "the artwork", "the box", "the endgame"),
]

GOOD = [
    "excellent",
    "wonderful",
    "superb",
    "delightful",
    "brilliant",
    "charming",
    "solid",
    "lovely",
    "impressive",
    "fantastic",
    "thoughtful",
    "generous",
    "reliable",
    "gorgeous",
    "smooth",
    "funny",
]
BAD = [
    "terrible",
    "awful",
    "disappointing",
    "dull",
    "clumsy",
    "broken",
    "mediocre",
    "painful",
    "overpriced",
    "sloppy",
    "tedious",
    "flimsy",
    "rude",
    "confusing",
    "bland",
    "unbearable",
]
STRONG = ["really", "truly", "genuinely", "absolutely", "remarkably", "surprisingly", "quite", "rather"]
FEELINGS_GOOD = [
    "I loved it",
    "it made my week",
    "I would happily go back",
    "I recommend it to everyone",
    "it exceeded my expectations",
    "I left with a smile",
    "it was worth every penny",
    "I have already told my friends about it",
]
FEELINGS_BAD = [
    "I regret it",
    "it ruined my evening",
    "I will not go back",
    "I would not recommend it",
    "it fell far short of my expectations",
    "I asked for a refund",
    "it was a waste of money",
    "I have warned my friends about it",
]
NEUTRAL = [
    "The {thing} opened in March.",
    "I went to the {thing} with my sister on Saturday.",
    "The {thing} costs about the same as the others in town.",
    "We talked about the {thing} over dinner.",
    "The {thing} is listed in the guide under the letter B.",
    "My neighbour mentioned the {thing} yesterday.",
    "The review of the {thing} is on page four.",
    "I tried the {thing} for the first time last week.",
    "Is the {thing} open on Sundays?",
    "Which {thing} did you end up choosing?",
    "The {thing} comes in three colours.",
    "I read two reviews of the {thing} before deciding.",
    "She works near the {thing}.",
    "{Aspect} of the {thing} was mentioned in the announcement.",
    "I have not made up my mind about the {thing} yet.",
    "The {thing} was about what I expected, nothing more and nothing less.",
]
SHORT_GOOD = [
    "Loved it.",
    "Great value.",
    "Highly recommended!",
    "Five stars.",
    "What a treat.",
    "Simply perfect.",
    "Worth the wait.",
    "Pure joy from start to finish.",
    "Never disappoints.",
    "A real gem.",
    "Can't wait to go back.",
    "Best one I've tried.",
]
SHORT_BAD = [
    "Hated it.",
    "Avoid.",
    "Total waste of time.",
    "One star, and that is generous.",
    "Never again.",
    "What a letdown.",
    "Utterly forgettable.",
    "Not worth the money.",
    "A complete mess.",
    "Broke after a week.",
    "So boring.",
    "Worst one I've tried.",
]


def _templates():
    """Return the templates: positive, negative and neutral ones; the placeholders are filled per sentence."""
    return [
        "The {thing} was {strong} {good}.",
        "The {thing} was {strong} {bad}.",
        "{Aspect} was {good}, and {feel_good}.",
        "{Aspect} was {bad}, and {feel_bad}.",
        "{Aspect} was not {bad} at all.",
        "{Aspect} was not {good} at all.",
        "I wouldn't call {aspect} {good}.",
        "I can't say {aspect} was {bad}; in fact it was {good}.",
        "{Aspect} was {bad}, but {aspect2} was so {good} that {feel_good}.",
        "{Aspect} was {good}, but {aspect2} was so {bad} that {feel_bad}.",
        "Despite {aspect2}, which was {bad}, the {thing} as a whole was {good}.",
        "Although {aspect} was {good}, the {thing} as a whole was {bad}.",
        "Honestly, {feel_good}.",
        "Honestly, {feel_bad}.",
        "Is it just me, or was {aspect} {strong} {good}?",
        "Why was {aspect} so {bad}?",
        "The {thing} is better than I had been told: {aspect} is {good} and {aspect2} is {good2}.",
        "The {thing} is worse than I had been told: {aspect} is {bad} and {aspect2} is {bad2}.",
        "We had been looking forward to this {thing} for months, and from the moment we arrived "
        "{aspect} was {good}; by the time we left {feel_good}.",
        "We had been looking forward to this {thing} for months, but from the moment we arrived "
        "{aspect} was {bad}, {aspect2} was {bad2}, and by the time we left {feel_bad}.",
        "I went in with low expectations after the mixed reviews, so it is a pleasure to report "
        "that {aspect} was {strong} {good} and that {aspect2} was {good2} too.",
        "I went in with high hopes after the glowing reviews, so it is a shame to report that "
        "{aspect} was {strong} {bad} and that {aspect2} was {bad2} too.",
        "On paper the {thing} has everything, and {aspect} is fine, but {aspect2} is {bad}, "
        "which matters more than it sounds.",
        "It took a while to warm up to the {thing}, since {aspect} felt {bad} at first, yet "
        "after a few days {aspect2} won me over and now {feel_good}.",
        "The {thing}? {Short_good}",
        "The {thing}? {Short_bad}",
        "{Short_good}",
        "{Short_bad}",
        "{neutral}",
        "{neutral} {Aspect} is {good}.",
        "{neutral} {Aspect} is {bad}.",
        "{Aspect} was neither {good} nor {bad}, just ordinary.",
        "Some people will find {aspect} {good}, others will find it {bad}.",
    ]


def sentence(rng, template):
    """Return `template` filled with fragments drawn from `rng`."""
    thing, *aspects = rng.choice(THINGS)
    aspect, aspect2 = rng.sample(aspects, 2)
    good, good2 = rng.sample(GOOD, 2)
    bad, bad2 = rng.sample(BAD, 2)
    filled = template.format(
        thing=thing,
        aspect=aspect,
        aspect2=aspect2,
        Aspect=aspect[0].upper() + aspect[1:],
        good=good,
        good2=good2,
        bad=bad,
        bad2=bad2,
        strong=rng.choice(STRONG),
        feel_good=rng.choice(FEELINGS_GOOD),
        feel_bad=rng.choice(FEELINGS_BAD),
        Short_good=rng.choice(SHORT_GOOD),
        Short_bad=rng.choice(SHORT_BAD),
        neutral=rng.choice(NEUTRAL).format(thing=thing, Aspect=aspect[0].upper() + aspect[1:]),
    )
    return filled[0].upper() + filled[1:]


def sentences(count=COUNT, seed=SEED):
    """Return `count` distinct sentences, templates taken in turn so every kind is represented."""
    rng = random.Random(seed)  # noqa: S311 - a fixed sample, not a secret
    templates = _templates()
    chosen, seen = [], set()
    index = 0
    while len(chosen) < count:
        text = sentence(rng, templates[index % len(templates)])
        index += 1
        if text not in seen:
            seen.add(text)
            chosen.append(text)
    return chosen


def main():
    """Write the sample, one sentence a line."""
    TARGET.parent.mkdir(parents=True, exist_ok=True)
    TARGET.write_text("".join(f"{text}\n" for text in sentences()), encoding="utf-8")
    print(f"wrote {COUNT} sentences to {TARGET}")


if __name__ == "__main__":
    main()
