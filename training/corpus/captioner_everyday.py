"""A second captioner voice: the same geometric facts (``captioner.extract_facts``) in the words people
type — "arms up, on one knee", "a woman lifting her right hand over her head", "she's squatting down with
her hands on her hips" — so a model trained on both voices learns the facts, not one writer's wording.

Each fact has everyday clauses ("lifting {poss} {side} hand over {poss} head": they read after a noun,
after "is" and after "show …") and short tags ("right hand up"). Sentence shapes range from 2–5 word
tag lists to several sentences. Left and right are the body's own, as in ``captioner``.
"""
from __future__ import annotations

import numpy as np

from .captioner import SIDES, Caption, Fact, choose_facts, distinct, extract_facts, measure, phrase_key

# phrase key (captioner.phrase_key) → (clauses, tags); {poss} his/her/their, {side}, {other} the other side
EVERYDAY = {
    "arm_up": (["lifting {poss} {side} hand over {poss} head", "putting {poss} {side} arm up",
                "reaching {poss} {side} hand up high", "holding {poss} {side} hand up in the air"],
               ["{side} arm up", "{side} hand raised", "{side} hand in the air"]),
    "arm_up:both": (["putting both arms up", "holding {poss} hands up over {poss} head",
                     "reaching up high with both hands", "throwing {poss} arms up"],
                    ["arms up", "arms raised", "hands up", "both hands in the air"]),
    "arm_v_up": (["throwing {poss} {side} arm up and out", "lifting {poss} {side} arm up at an angle"],
                 ["{side} arm up and out"]),
    "arm_v_up:both": (["throwing {poss} arms up in a V", "cheering with {poss} arms up wide",
                       "spreading {poss} arms up and out"], ["arms up in a V", "arms up wide", "V arms"]),
    "arm_forward": (["pointing straight ahead with {poss} {side} hand", "sticking {poss} {side} arm out in front",
                     "reaching forward with {poss} {side} hand"], ["{side} arm forward", "{side} arm out front"]),
    "arm_forward:both": (["holding both arms out in front", "sticking {poss} arms straight out ahead",
                          "reaching forward with both hands"], ["arms out front", "arms forward"]),
    "arm_sideways": (["sticking {poss} {side} arm out to the side", "holding {poss} {side} arm out level"],
                     ["{side} arm out", "{side} arm out sideways"]),
    "arm_sideways:both": (["holding {poss} arms out wide", "spreading {poss} arms out to the sides",
                           "making a T with {poss} arms"], ["arms out wide", "T-pose arms", "arms spread"]),
    "arm_reach": (["reaching up and forward with {poss} {side} hand", "stretching {poss} {side} arm up in front"],
                  ["{side} hand reaching up"]),
    "arm_reach:both": (["reaching up and forward with both hands", "stretching both arms up in front"],
                       ["reaching up", "arms reaching forward"]),
    "arm_on_hip": (["putting {poss} {side} hand on {poss} hip", "resting {poss} {side} fist on {poss} hip"],
                   ["{side} hand on hip"]),
    "arm_on_hip:both": (["putting {poss} hands on {poss} hips", "planting {poss} fists on {poss} hips"],
                        ["hands on hips", "hands on {poss} hips"]),
    "arm_crossed:both": (["folding {poss} arms", "crossing {poss} arms"],
                         ["arms crossed", "arms folded"]),
    "arm_hands_together:both": (["putting {poss} palms together", "holding {poss} hands together in front",
                                 "joining {poss} hands as if praying"], ["hands together", "palms together"]),
    "arm_behind_head": (["tucking {poss} {side} hand behind {poss} head",
                         "scratching the back of {poss} head with {poss} {side} hand"], ["{side} hand behind head"]),
    "arm_behind_head:both": (["putting {poss} hands behind {poss} head", "lacing {poss} fingers behind {poss} head"],
                             ["hands behind head"]),
    "arm_to_face": (["touching {poss} chin with {poss} {side} hand", "bringing {poss} {side} hand up to {poss} face"],
                    ["{side} hand to face", "{side} hand on chin"]),
    "arm_to_face:both": (["holding {poss} face in both hands", "bringing both hands up to {poss} face"],
                         ["hands to face"]),
    "arm_behind_back": (["tucking {poss} {side} hand behind {poss} back"], ["{side} hand behind back"]),
    "arm_behind_back:both": (["holding {poss} hands behind {poss} back", "tucking both hands behind {poss} back"],
                             ["hands behind back"]),
    "arm_forearm_up": (["waving {poss} {side} hand", "holding {poss} {side} hand up with the elbow bent",
                        "giving a wave with the {side} hand"], ["{side} hand waving", "waving {side} hand",
                                                                "{side} forearm up"]),
    "arm_forearm_up:both": (["flexing both arms", "showing off {poss} biceps", "holding both fists up by {poss} head"],
                            ["flexing arms", "fists up"]),
    "arm_front_bent": (["holding {poss} {side} forearm out in front", "bending {poss} {side} arm with the hand in front"],
                       ["{side} forearm forward"]),
    "arm_front_bent:both": (["holding both hands out in front at waist height",
                             "bending both arms with the hands in front"], ["hands in front", "elbows bent, hands forward"]),
    "arm_down": (["letting {poss} {side} arm hang down", "keeping {poss} {side} arm down"], ["{side} arm down"]),
    "arm_down:both": (["letting {poss} arms hang", "keeping {poss} arms down", "resting {poss} arms at {poss} sides"],
                      ["arms down", "arms at sides", "arms relaxed"]),
    "kneel": (["kneeling with {poss} {side} knee on the ground", "on {poss} {side} knee", "going down on one knee"],
              ["on one knee", "kneeling on {side} knee", "{side} knee down"]),
    "kneel:both": (["kneeling", "down on both knees", "kneeling on the floor"], ["kneeling", "on both knees", "on {poss} knees"]),
    "sit:both": (["sitting", "sitting on a chair", "taking a seat"], ["sitting", "seated", "sitting on a chair"]),
    "squat:both": (["squatting down", "crouching all the way down", "squatting low"], ["squatting", "deep squat", "squatting down"]),
    "crouch:both": (["bending {poss} knees a bit", "crouching slightly", "standing with knees bent"],
                    ["knees bent", "half squat", "slight crouch"]),
    "lunge": (["doing a lunge with {poss} {side} leg in front", "stepping into a deep lunge with the {side} foot forward"],
              ["lunge, {side} leg forward", "{side} leg lunging"]),
    "raise": (["lifting {poss} {side} knee up", "standing on one leg with the {side} knee up",
               "balancing on {poss} {other} foot"], ["{side} knee up", "on one leg", "standing on {other} leg"]),
    "step": (["taking a step with {poss} {side} foot", "walking forward, {side} foot in front",
              "mid-stride with the {side} foot ahead"], ["{side} foot forward", "stepping with {side} foot", "mid-step"]),
    "wide_stance:both": (["standing with {poss} legs wide", "planting {poss} feet wide", "standing with legs apart"],
                         ["feet apart", "wide stance", "legs wide"]),
    "stand:both": (["standing", "standing tall", "standing still"], ["standing", "standing up straight"]),
    "lean_forward": (["leaning forward", "bending over", "bending forward at the hips", "hunching forward"],
                     ["leaning forward", "bent over", "leaning in"]),
    "lean_back": (["leaning back", "bending backward", "leaning backward"], ["leaning back", "arched back"]),
    "lean_side": (["leaning to the {side}", "bending over to the {side}", "tilting {poss} body to {poss} {side}"],
                  ["leaning {side}", "leaning to the {side}"]),
    "twist": (["twisting to the {side}", "turning {poss} upper body to the {side}", "twisting {poss} waist toward the {side}"],
              ["twisted {side}", "torso turned {side}"]),
    "head_turn": (["looking to the {side}", "looking over to {poss} {side}", "turning {poss} face to the {side}",
                   "glancing {side}"], ["looking {side}", "head turned {side}", "head to the {side}"]),
    "head_down": (["staring at {poss} feet", "looking at the floor", "hanging {poss} head", "dropping {poss} head"],
                  ["looking down", "head down", "head bowed"]),
    "head_up": (["looking up at the ceiling", "looking up at the sky", "tipping {poss} head back"], ["looking up", "head up", "chin up"]),
    "head_tilt": (["leaning {poss} head to the {side}", "cocking {poss} head to the {side}"],
                  ["head tilted {side}", "head tilted to the {side}"]),
}

# (noun phrase, pronoun with "is" contracted, possessive)
PEOPLE = (("a woman", "she's", "her"), ("a man", "he's", "his"), ("someone", "they're", "their"),
          ("a person", "they're", "their"), ("a guy", "he's", "his"), ("a girl", "she's", "her"),
          ("my character", "they're", "their"), ("a dancer", "she's", "her"), ("an old man", "he's", "his"))
SHAPES = ("tags", "tags", "noun", "is", "show", "long")     # tags twice: short prompts are what people type most


def _fill(template: str, fact: Fact, poss: str) -> str:
    side = fact.side if fact.side in SIDES else ""
    other = {"left": "right", "right": "left"}.get(side, "")
    return " ".join(template.format(poss=poss, side=side, other=other).split())


def _join(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def compose(facts: list[Fact], rng, shape: str | None = None) -> str:
    """Write chosen facts in one everyday shape (``rng`` a ``numpy.random.Generator``)."""
    shape = shape or SHAPES[int(rng.integers(len(SHAPES)))]
    noun, pron, poss = PEOPLE[int(rng.integers(len(PEOPLE)))]
    pick = lambda options: options[int(rng.integers(len(options)))]  # noqa: E731
    if not facts:
        return "just standing there, relaxed" if shape == "tags" else f"{noun.capitalize()} standing relaxed."
    if shape == "tags":                   # "arms up, on one knee"
        return ", ".join(_fill(pick(EVERYDAY[phrase_key(f)][1]), f, poss) for f in facts)
    clauses = [_fill(pick(EVERYDAY[phrase_key(f)][0]), f, poss) for f in facts]
    if shape == "noun":                   # "A woman lifting her right hand over her head and kneeling."
        text = f"{noun} {_join(clauses)}."
    elif shape == "is":                   # "She's squatting down and looking up."
        text = f"{pron} {_join(clauses)}."
    elif shape == "show":                 # "Show a guy folding his arms."
        text = pick(("Show {n} {c}.", "I want {n} {c}.", "Can you do {n} {c}?", "Pose {n} {c}.",
                     "Give me {n} {c}.")).format(n=noun, c=_join(clauses))
    else:                                 # several sentences, the way a longer request reads
        pronoun = pron.split("'")[0]
        be = "are" if pronoun == "they" else "is"
        text = f"{noun} is {clauses[0]}."
        if len(clauses) > 1:
            text += f" {pronoun.capitalize()} {be} also {_join(clauses[1:])}."
        text += pick(("", " Keep it natural.", " Nothing fancy.", " That's the pose I need."))
    return text[:1].upper() + text[1:]


def captions(rotmats: np.ndarray, rng, count: int = 3) -> list[Caption]:
    """``count`` different everyday captions of one pose (24, 3, 3), each with the facts it states: the
    first a short tag list of 1–3 facts, the others any shape with 1–4."""
    facts = extract_facts(measure(rotmats))

    def draw(i: int) -> Caption:
        short = i == 0
        chosen = choose_facts(facts, rng, max_facts=int(rng.integers(1, 4)) if short else None)
        return Caption(text=compose(chosen, rng, "tags" if short else None), facts=chosen)

    return distinct(draw, count)
