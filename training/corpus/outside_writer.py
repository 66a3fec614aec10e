"""The outside-the-corpus evaluation set: words the demo model was never trained on, for poses it can make.

Nothing in training imports this module; it exists so a benchmark can ask the model in other people's words.
Three parts:

1. ``describe(rotmats, rng)``: a second writer, apart from the training captioners. It reuses only the
   captioner's geometry (``measure`` → ``extract_facts``: which arm is up, which knee is on the floor …) and
   writes the facts in its own everyday wording, the way people type ("dude hunkered on his haunches, both
   mitts skyward"). Its open-class words (verbs, adjectives, adverbs, nouns other than body parts) are
   disjoint from every word of the training texts: ``writer_words() & training_words()`` is empty after
   taking out ``SHARED_WORDS`` (articles, pronouns, prepositions, sides, numbers and body-part nouns, which
   no description can do without). ``tests/test_outside_eval.py`` checks it.
2. ``paraphrase(text, rng)``: rewrites a training-style explicit caption with everyday synonyms
   ("raising" → "hoisting", "kneeling on both knees" → "on both knees"), same meaning, same sides; the
   benchmark's ``paraphrase_degradation`` is the error on paraphrased captions over the error on the
   originals, same poses.
3. ``outside_prompts.jsonl`` (next to this file): prompts typed by hand the way artists write, each with a
   ``spec`` naming the generator's recipes (arm pair or per-side arm recipes, leg pair, torso lean and
   twist, head turn/nod/tilt in degrees). ``build_spec_pose(spec)`` turns a spec into its target pose
   deterministically: every recipe at the centre of its ranges (``generator.sample_arm``/``sample_leg``
   fed a "midpoint" random source), torso and head as the spec says, facing the viewer.
"""
from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import numpy as np

from smpl_rig.skeleton import JOINT_INDEX as J
from smpl_rig.skeleton import NUM_JOINTS

from . import generator as gen
from .captioner import Fact, extract_facts, measure

PROMPTS_FILE = Path(__file__).with_name("outside_prompts.jsonl")
WORD = re.compile(r"[a-z]+")

# Words both writers may use: closed-class words, the two sides, numbers and the names of body parts.
SHARED_WORDS = frozenset("""
a an the no and or but with without while as like of to in into on onto at by for from off over under
up down out behind beside above across toward front back
is are be has have it its he she they his her their him them one both other two
left right
arm arms hand hands leg legs knee knees foot feet head neck shoulder shoulders elbow elbows hip hips
chest chin face body forearm forearms eyes fingers
""".split())

# --- 1. the writer --------------------------------------------------------------------------------------

# Phrasings per fact (keys as ``captioner.phrase_key``): fragments people type after a subject or between
# commas. Placeholders: {p} his/her/their, {side} left/right, {other} the other side.
OUTSIDE_PHRASES = {
    "arm_up": ["{side} hand thrust heavenward", "{side} mitt hoisted skyward", "{side} knuckles punched at the rafters",
               "{p} {side} hand hoisted aloft"],
    "arm_up:both": ["both mitts skyward", "arms hoisted at the rafters", "hands thrust heavenward",
                    "both hands hoisted aloft"],
    "arm_v_up": ["{side} arm flung skyward on a slant", "{side} arm aimed skyward and outward"],
    "arm_v_up:both": ["arms fanned skyward", "arms flung skyward on a slant, cheerleader-style",
                      "arms thrown skyward and outward"],
    "arm_forward": ["{side} arm jutting frontward", "{side} arm poking frontward, horizontal",
                    "{p} {side} arm thrust frontward"],
    "arm_forward:both": ["arms jutting frontward", "both arms poking frontward, horizontal",
                         "arms thrust frontward, mummy-style"],
    "arm_sideways": ["{side} arm flung sidelong", "{side} arm jutting sidelong, horizontal"],
    "arm_sideways:both": ["arms outspread like an eagle", "scarecrow arms", "arms flung sidelong like an aeroplane"],
    "arm_reach": ["{side} hand grasping at a lofty cupboard", "{side} arm groping skyward and frontward"],
    "arm_reach:both": ["both hands grasping at a lofty cupboard", "arms groping skyward and frontward"],
    "arm_on_hip": ["{side} hand propped on {p} hip", "{side} knuckles jammed into {p} hip"],
    "arm_on_hip:both": ["hands propped on {p} hips", "knuckles jammed into {p} hips", "teapot arms on both hips"],
    "arm_crossed:both": ["arms crisscrossed", "arms knotted over {p} chest", "arms locked over {p} chest"],
    "arm_hands_together:both": ["hands meeting in a namaste", "namaste hands", "fingertips meeting in a namaste"],
    "arm_behind_head": ["{side} hand cradling the back of {p} head", "{side} hand rubbing the back of {p} head"],
    "arm_behind_head:both": ["fingers interlocked behind {p} head", "hands cradling the back of {p} head"],
    "arm_to_face": ["{side} hand cupping {p} chin", "{side} hand stroking {p} chin"],
    "arm_to_face:both": ["chin cupped in both hands", "both hands cupping {p} chin"],
    "arm_behind_back": ["{side} hand hidden behind {p} back", "{side} arm concealed behind {p} back"],
    "arm_behind_back:both": ["hands hidden behind {p} back", "hands linked behind {p} back, soldier at ease"],
    "arm_forearm_up": ["{side} hand flapping a howdy", "{side} elbow crooked, hand beside {p} ear",
                       "{side} hand up to slap five"],
    "arm_forearm_up:both": ["flaunting {p} guns", "arms curled like a strongman", "guns out, elbows crooked"],
    "arm_front_bent": ["{side} elbow crooked, hand out before {p} belly", "{side} forearm jutting frontward"],
    "arm_front_bent:both": ["hands hovering over a keyboard", "elbows crooked, hands out before {p} belly",
                            "carrying an invisible tray"],
    "arm_down": ["{side} arm dangling loose", "{side} arm limp"],
    "arm_down:both": ["arms dangling loose", "arms limp", "arms dangling"],
    "kneel": ["genuflecting on {p} {side} knee", "propped on {p} {side} knee, {other} foot firm on the carpet"],
    "kneel:both": ["on both knees", "genuflecting on both knees", "down on both knees, butt up"],
    "sit:both": ["perched on a stool", "plopped on a stool", "parked on a bench"],
    "squat:both": ["hunkered on {p} haunches", "on {p} haunches", "hunkered rock-bottom"],
    "crouch:both": ["semi-hunkered", "knees crooked, semi-hunkered", "braced with knees crooked"],
    "lunge": ["{side} foot leading, fencer-style", "{side} leg thrust frontward, {other} leg trailing"],
    "raise": ["{side} knee hiked to {p} belly", "perched on one foot, {side} knee hiked"],
    "step": ["pacing along, {side} foot leading", "sauntering, {side} foot leading"],
    "wide_stance:both": ["legs splayed", "straddle-legged", "feet splayed"],
    "stand:both": ["idling on {p} feet", "on {p} feet, no frills", "loitering on {p} feet"],
    "lean_forward": ["stooped frontward", "stooping", "doubled over"],
    "lean_back": ["reclined", "swaying rearward", "toppling rearward a tad"],
    "lean_side": ["listing to the {side}", "canted to the {side}"],
    "twist": ["{p} shoulders swiveled to the {side}", "wound up to the {side}"],
    "head_turn": ["squinting off to the {side}", "peering off to the {side}", "eyeballing stuff on the {side}"],
    "head_down": ["peering at {p} toes", "chin slumped onto {p} chest", "eyes on the carpet"],
    "head_up": ["peering skyward", "gawking at the heavens", "eyes on the rafters"],
    "head_tilt": ["head canted to the {side}", "quizzical head cant to the {side}"],
}

WRITER_SUBJECTS = (("chap", "his"), ("dude", "his"), ("fella", "his"), ("boy", "his"), ("grandpa", "his"),
                   ("lady", "her"), ("lass", "her"), ("gal", "her"), ("grandma", "her"), ("kid", "their"),
                   ("", "their"))
_PART_ORDER = {"legs": 0, "arms": 1, "torso": 2, "head": 3}


def _phrase_key(fact: Fact) -> str:
    return f"{fact.key}:both" if fact.side == "both" else fact.key


def pick_facts(facts: list[Fact], max_facts: int = 4) -> list[Fact]:
    """What an artist would say: the arms and the legs (unless just standing with arms down beside
    something more telling), then the most salient torso or head facts, at most ``max_facts``."""
    core = [f for f in facts if f.part in ("arms", "legs")]
    rest = sorted((f for f in facts if f.part not in ("arms", "legs")), key=lambda f: -f.salience)
    if len(core) > 1:   # drop the dull parts when something else is said
        core = [f for f in core if f.key not in ("stand", "arm_down")] or core[:1]
    chosen = (core + rest)[:max_facts]
    return sorted(chosen, key=lambda f: _PART_ORDER.get(f.part, 4))


def write(facts: list[Fact], rng) -> str:
    """The chosen facts as one line in the writer's words, with a random subject and shape."""
    subject, poss = WRITER_SUBJECTS[int(rng.integers(len(WRITER_SUBJECTS)))]
    frags = []
    for fact in facts:
        options = OUTSIDE_PHRASES.get(_phrase_key(fact))
        if not options:
            continue
        side = fact.side if fact.side in ("left", "right") else ""
        other = {"left": "right", "right": "left"}.get(side, "")
        frags.append(options[int(rng.integers(len(options)))].format(p=poss, side=side, other=other))
    if not frags:
        frags = ["idling on {p} feet".format(p=poss)]
    shape = int(rng.integers(3))
    if shape == 0 or len(frags) == 1:
        body = ", ".join(frags)
    elif shape == 1:
        body = ", ".join(frags[:-1]) + " and " + frags[-1]
    else:
        body = frags[0] + " - " + ", ".join(frags[1:])
    if not subject:
        return body
    # "guy with his left hand ..." before a noun phrase, "guy hunkered ..." before a verb phrase.
    noun_phrase = body.split(" ", 1)[0] in _NOUN_STARTS
    return f"{subject} with {body}" if noun_phrase and rng.random() < 0.6 else f"{subject}, {body}" if noun_phrase \
        else f"{subject} {body}"


_NOUN_STARTS = {"left", "right", "both", "arms", "hands", "fingers", "knuckles", "chin", "legs", "feet", "head",
                "eyes", "his", "her", "their", "scarecrow", "namaste", "teapot", "guns", "elbows", "knees"}


def describe(rotmats: np.ndarray, rng, max_facts: int = 4) -> str:
    """Describe a pose (24, 3, 3 local rotations, SMPL frame; joint 0 may be in any frame that keeps the
    body upright) in the outside writer's words."""
    rotmats = np.asarray(rotmats, dtype=np.float64)
    return write(pick_facts(extract_facts(measure(rotmats)), max_facts), rng)


def writer_words() -> set[str]:
    """Every word the writer can produce (phrasings and subjects)."""
    out = set()
    for options in OUTSIDE_PHRASES.values():
        for text in options:
            out |= set(WORD.findall(text.replace("{p}", "").replace("{side}", "").replace("{other}", "").lower()))
    for subject, poss in WRITER_SUBJECTS:
        out |= set(WORD.findall(f"{subject} {poss}"))
    return out


# --- the training side's words (for the disjointness check) --------------------------------------------

def _source_strings(path: Path):
    """Every string constant of a Python file except docstrings (f-string pieces included)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    docs = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docs.add(id(first.value))
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
            yield node.value


def training_words(extra_texts=()) -> set[str]:
    """Every word a training text can contain: all string constants (not docstrings) of the corpus
    modules in ``training/corpus/`` other than this one, and of ``training/chat_turns.py`` (the question
    and answer templates), plus ``extra_texts`` (for instance a checkpoint's training captions). Reading
    the source, not a list, keeps a new captioner voice or edit instruction module in the check."""
    here = Path(__file__).resolve()
    files = [p for p in sorted(here.parent.glob("*.py")) if p != here] + [here.parent.parent / "chat_turns.py"]
    out = set()
    for path in files:
        for text in _source_strings(path):
            out |= set(WORD.findall(text.lower()))
    for text in extra_texts:
        out |= set(WORD.findall(str(text).lower()))
    return out


def stem(word: str) -> str:
    """A rough stem so that inflections count as the same word ("kneels", "kneeling" → "kneel")."""
    for suffix in ("ing", "ed", "es", "s", "ly"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    return word


# --- 2. the paraphraser ---------------------------------------------------------------------------------

# (pattern, everyday alternatives) applied in order, each at most once per place; patterns are regular
# expressions on lower-case words and keep "left"/"right" as they are.
_PARAPHRASES = [
    (r"\bthe person\b|\ba person\b", ["the guy", "this character", "the dude"]),
    (r"\bthe figure\b", ["this character", "the mannequin"]),
    (r"\bsomeone\b", ["somebody"]),
    (r"\bthe man\b", ["the guy", "the fella"]),
    (r"\bthe woman\b", ["the lady", "the gal"]),
    (r"\bkneeling on both knees\b|\bkneeling upright\b|\bdown on (his|her|their|its) knees\b", ["on both knees"]),
    (r"\bkneeling on\b", ["propped on", "genuflecting on"]),
    (r"\bkneeling\b", ["genuflecting"]),
    (r"\bdown on (his|her|their|its) (left|right) knee\b", [r"on \1 \2 knee"]),
    (r"\bon the floor\b|\bon the ground\b", ["on the carpet"]),
    (r"\bsquatting low\b|\bin a deep squat\b|\bcrouching down in a deep squat\b", ["hunkered way low"]),
    (r"\bsquatting\b", ["hunkering"]),
    (r"\bcrouching\b|\bcrouched\b", ["hunkered"]),
    (r"\bin a half crouch\b", ["half-hunkered"]),
    (r"\bin a half squat\b", ["in a semi-hunker"]),
    (r"\bsitting as if on a chair\b", ["perched as if on a stool"]),
    (r"\bsitting down\b|\bsitting\b|\bseated\b", ["perched"]),
    (r"\blunging forward\b", ["thrusting frontward"]),
    (r"\bin a lunge\b|\bin a deep lunge\b", ["in a fencer's thrust"]),
    (r"\bstepping forward\b", ["striding frontward"]),
    (r"\btaking a step\b", ["striding"]),
    (r"\bmid-step\b", ["mid-stride"]),
    (r"\bstanding straight\b|\bstanding upright\b", ["standing tall"]),
    (r"\bfeet wide apart\b|\blegs spread apart\b", ["feet splayed"]),
    (r"\bwide stance\b", ["broad, splayed stance"]),
    (r"\bbalancing\b", ["teetering"]),
    (r"\blifting\b", ["hiking"]),
    (r"\blifted\b", ["hiked"]),
    (r"\braising\b", ["hoisting"]),
    (r"\braised\b", ["hoisted"]),
    (r"\babove (his|her|their|its|the) head\b", [r"over \1 head"]),
    (r"\bstraight up overhead\b|\bstraight up\b", ["skyward"]),
    (r"\bup in the air\b|\bin the air\b|\boverhead\b", ["aloft"]),
    (r"\bpointing\b", ["aiming"]),
    (r"\bstretching\b", ["extending"]),
    (r"\bextended\b", ["stuck out"]),
    (r"\bstraight ahead\b|\bout in front\b|\bout ahead\b", ["out frontward"]),
    (r"\breaching\b", ["grasping"]),
    (r"\bresting\b", ["propping"]),
    (r"\bfist\b", ["knuckles"]),
    (r"\bfists\b", ["knuckles"]),
    (r"\bcrossing\b", ["crisscrossing"]),
    (r"\bcrossed\b", ["crisscrossed"]),
    (r"\bfolded\b", ["locked"]),
    (r"\bclasping\b|\bclasped\b|\blaced\b", ["interlocked"]),
    (r"\bpalms\b", ["hands"]),
    (r"\bpressing\b", ["pushing"]),
    (r"\bholding\b|\bkeeping\b", ["keeping"]),
    (r"\bletting (his|her|their|its) (left|right) arm hang\b", [r"keeping \1 \2 arm dangling"]),
    (r"\bhanging\b", ["dangling"]),
    (r"\brelaxed\b", ["loose"]),
    (r"\bchin tucked down\b", ["chin dropped"]),
    (r"\btucked\b", ["hidden"]),
    (r"\bwaving\b", ["flapping a howdy"]),
    (r"\bleaning\b", ["tipping"]),
    (r"\bbending forward\b", ["stooping forward"]),
    (r"\bbending sideways\b", ["tipping sideways"]),
    (r"\bbending\b", ["flexing"]),
    (r"\bbent forward\b", ["stooped forward"]),
    (r"\bbent\b", ["flexed"]),
    (r"\bat the waist\b", ["from the hips"]),
    (r"\barching\b", ["curving"]),
    (r"\btilting\b", ["canting", "cocking"]),
    (r"\btilted\b", ["canted", "cocked"]),
    (r"\btwisting\b|\brotating\b", ["swiveling"]),
    (r"\btwisted\b|\bturned(?= to| toward)", ["swiveled"]),
    (r"\bturned upward\b", ["tipped skyward"]),
    (r"\bturning\b", ["swiveling"]),
    (r"\blooking\b|\bgazing\b", ["peering"]),
    (r"\bbowing\b", ["dropping"]),
    (r"\bbowed\b", ["dropped"]),
    (r"\bslightly\b", ["a little", "a tad"]),
    (r"\bnoticeably\b", ["quite a bit"]),
    (r"\bdeeply\b", ["a lot"]),
    (r"\bsharply\b", ["tightly"]),
    (r"\bpartway\b", ["part of the way"]),
    (r"\bto about a right angle\b", ["into an L shape"]),
    (r"\bby about\b|\bto about\b", [lambda m: m.group(0).replace("about", "roughly")]),
    (r"\bupper body\b|\btorso\b", ["trunk"]),
]
_COMPILED = [(re.compile(p, re.IGNORECASE), alts) for p, alts in _PARAPHRASES]


def _match_case(original: str, new: str) -> str:
    return new[:1].upper() + new[1:] if original[:1].isupper() else new


def paraphrase(text: str, rng=None) -> str:
    """``text`` with everyday synonyms; ``rng`` (numpy Generator) picks among alternatives, None picks the
    first. Sides and numbers are kept; the meaning stays."""
    out = text
    for pattern, alts in _COMPILED:
        def repl(m, alts=alts):
            alt = alts[0] if rng is None else alts[int(rng.integers(len(alts)))]
            new = alt(m) if callable(alt) else m.expand(alt)
            return _match_case(m.group(0), new)
        out = pattern.sub(repl, out)
    return out


# --- 3. hand-typed prompts and their targets ------------------------------------------------------------

class _Midpoint:
    """A stand-in random source: every range gives its centre, every noise zero, every coin the first side."""

    def uniform(self, lo=0.0, hi=1.0, size=None):
        return (lo + hi) / 2 if size is None else np.full(size, (lo + hi) / 2)

    def normal(self, loc=0.0, scale=1.0, size=None):
        return loc if size is None else np.full(size, loc, dtype=np.float64)

    def random(self, size=None):
        return 0.5 if size is None else np.full(size, 0.5)


SPEC_KEYS = {"arms", "left_arm", "right_arm", "legs", "lean", "lean_deg", "twist_deg", "head_turn", "head_nod",
             "head_tilt"}
LEAN_DEFAULT_DEG = {"forward": 27.5, "back": 18.5, "left": 18.5, "right": 18.5, "none": 0.0}


def check_spec(spec: dict) -> None:
    """Raise ValueError when a spec names something the generator does not have."""
    unknown = set(spec) - SPEC_KEYS
    if unknown:
        raise ValueError(f"unknown spec keys {sorted(unknown)}; expected some of {sorted(SPEC_KEYS)}")
    if "arms" in spec:
        if "left_arm" in spec or "right_arm" in spec:
            raise ValueError("give either arms (a pair) or left_arm/right_arm (recipes), not both")
        if spec["arms"] not in gen.arm_pair_names() or spec["arms"] == "mixed":
            raise ValueError(f"unknown arm pair {spec['arms']!r}")
    else:
        for key in ("left_arm", "right_arm"):
            if spec.get(key, "down") not in gen.ARM_RECIPES:
                raise ValueError(f"unknown arm recipe {spec[key]!r} for {key}")
    if spec.get("legs", "standing") not in gen.leg_pair_names():
        raise ValueError(f"unknown leg pair {spec['legs']!r}")
    if spec.get("lean", "none") not in LEAN_DEFAULT_DEG:
        raise ValueError(f"unknown lean {spec['lean']!r}; expected one of {sorted(LEAN_DEFAULT_DEG)}")


def spec_angles(spec: dict) -> np.ndarray:
    """(24, 3) joint angles in degrees (generator convention, within ``generator.LIMITS``) of a spec."""
    check_spec(spec)
    mid = _Midpoint()
    a = np.zeros((NUM_JOINTS, 3))
    if "arms" in spec:
        left_recipe, right_recipe = gen.resolve_arm_pair(spec["arms"], mid)
    else:
        left_recipe, right_recipe = spec.get("left_arm", "down"), spec.get("right_arm", "down")
    for side, recipe in (("left", left_recipe), ("right", right_recipe)):
        arm = gen.sample_arm(recipe, mid)
        for part in ("collar", "shoulder", "elbow", "wrist", "hand"):
            x, y, z = arm[part]
            a[J[f"{side}_{part}"]] = (x, y, z) if side == "left" else (x, -y, -z)
    left_leg, right_leg, tilt_range = gen.resolve_leg_pair(spec.get("legs", "standing"))
    tilt = float(np.mean(tilt_range))
    for side, recipe in (("left", left_leg), ("right", right_leg)):
        leg = gen.sample_leg(recipe, mid, tilt)
        for part in ("hip", "knee", "ankle", "foot"):
            x, y, z = leg[part]
            a[J[f"{side}_{part}"]] = (x, y, z) if side == "left" else (x, -y, -z)
    lean = spec.get("lean", "none")
    deg = float(spec.get("lean_deg", LEAN_DEFAULT_DEG[lean]))
    pitch = deg if lean == "forward" else -deg if lean == "back" else 0.0
    side_bend = deg if lean == "left" else -deg if lean == "right" else 0.0
    twist = float(spec.get("twist_deg", 0.0))
    for name, share in gen.SPINE_SHARE.items():
        a[J[name]] = (pitch * share, twist * share, -side_bend * share)
    turn, nod, tilt_head = (float(spec.get(k, 0.0)) for k in ("head_turn", "head_nod", "head_tilt"))
    a[J["neck"]] = (0.4 * nod, 0.4 * turn, -0.4 * tilt_head)
    a[J["head"]] = (0.6 * nod, 0.6 * turn, -0.6 * tilt_head)
    a[0] = (tilt, 0.0, 0.0)
    return np.clip(a, gen.LIMITS[..., 0], gen.LIMITS[..., 1])


def build_spec_pose(spec: dict) -> gen.GeneratedPose:
    """The target pose of a spec (deterministic)."""
    return gen.pose_from_angles(spec_angles(spec), {"spec": dict(spec)})


def spec_target_rotmat(spec: dict) -> np.ndarray:
    """(24, 3, 3) text target of a spec: local rotations, joint 0 the canonical camera-frame orientation
    (as ``CorpusSample.text_target_rotmat``)."""
    pose = build_spec_pose(spec)
    out = pose.rotmat.copy()
    out[0] = pose.global_orient_camera
    return out


def load_prompts(path: str | Path = PROMPTS_FILE) -> list[dict]:
    """The hand-typed prompts: [{"prompt": str, "spec": dict}, ...], each spec checked."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            row = json.loads(line)
            if set(row) != {"prompt", "spec"} or not str(row["prompt"]).strip():
                raise ValueError(f"{path}:{number}: expected {{prompt, spec}}, got {sorted(row)}")
            try:
                check_spec(row["spec"])
            except ValueError as exc:
                raise ValueError(f"{path}:{number}: {exc}") from None
            rows.append(row)
    return rows


__all__ = ["SHARED_WORDS", "OUTSIDE_PHRASES", "describe", "pick_facts", "write", "writer_words", "training_words",
           "stem", "paraphrase", "spec_angles", "build_spec_pose", "spec_target_rotmat", "load_prompts",
           "check_spec", "PROMPTS_FILE"]
