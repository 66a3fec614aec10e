"""Speculative prompts: everyday situations ("he is surrendering", "she is tired after a run") mapped to the
pose families that show them, each with several phrasings.

``SITUATIONS[name]`` is a ``Situation(family, phrasings)``; ``prompt(name, rng)`` writes one phrasing with a
random subject; ``sample(generator, rng)`` draws a situation and a pose of its family.
"""
from __future__ import annotations

from dataclasses import dataclass

from .generator import GeneratedPose, PoseFamily, PoseGenerator


@dataclass(frozen=True)
class Situation:
    """A situation: the family of poses that shows it and the ways a user might say it. Phrasings use
    {S}/{s} (subject, capitalised or not), {poss} (his/her/their), {obj} (him/her/them), {refl}."""
    family: PoseFamily
    phrasings: tuple


def _both(base: str) -> tuple:
    return (f"{base}_left", f"{base}_right")


SITUATIONS = {
    "surrendering": Situation(
        PoseFamily(arms=("both_up",), legs=("standing", "kneeling_both"), lean=("none",)),
        ("{S} is surrendering.", "{S} puts {poss} hands up to surrender.", "Hands up! {S} gives up.",
         "{S} is being arrested and raises {poss} hands.", "Don't shoot, {s} surrenders.")),
    "tired_after_run": Situation(
        PoseFamily(arms=("both_down",), legs=("standing", "wide_stance"), lean=("forward",), lean_deg=(30, 45),
                   head_nod=(-10, 10)),
        ("{S} is tired after a run.", "{S} is catching {poss} breath after a long run.",
         "Exhausted after sprinting, {s} bends over.", "{S} is completely out of breath.")),
    "proposing": Situation(
        PoseFamily(arms=_both("one_forward") + _both("reach"), legs=_both("kneeling"), lean=("none",),
                   head_nod=(-15, 0)),
        ("{S} is proposing marriage.", "{S} goes down on one knee to propose.",
         "{S} is asking someone to marry {obj}.", "A marriage proposal: {s} kneels with a ring.")),
    "celebrating_goal": Situation(
        PoseFamily(arms=("v_up", "both_up"), legs=("standing", "wide_stance") + _both("step"),
                   head_nod=(-30, -10)),
        ("{S} is celebrating a goal.", "{S} just scored and is cheering.",
         "Victory! {S} celebrates with {poss} arms in the air.", "{S} is celebrating a win.")),
    "praying": Situation(
        PoseFamily(arms=("praying",), legs=("kneeling_both", "standing"), lean=("none",), head_nod=(15, 35)),
        ("{S} is praying.", "{S} kneels in prayer.", "{S} is saying a prayer with {poss} hands together.",
         "{S} prays quietly.")),
    "thinking_hard": Situation(
        PoseFamily(arms=_both("thinking"), legs=("standing", "sitting"), lean=("none", "forward"), lean_deg=(8, 18),
                   head_nod=(5, 20)),
        ("{S} is thinking hard.", "{S} is lost in thought.", "{S} ponders a difficult question.",
         "{S} is deep in thought, hand on chin.")),
    "morning_stretch": Situation(
        PoseFamily(arms=("both_up",), legs=("standing",), lean=("back",), lean_deg=(8, 20), head_nod=(-30, -10)),
        ("{S} is stretching in the morning.", "{S} just woke up and stretches.", "{S} does a big morning stretch.",
         "{S} yawns and stretches {poss} arms.")),
    "desk_work": Situation(
        PoseFamily(arms=("front_bent",), legs=("sitting",), lean=("forward", "none"), lean_deg=(5, 15),
                   head_nod=(5, 20)),
        ("{S} is sitting at a desk.", "{S} is typing at {poss} computer.", "{S} works at {poss} desk.",
         "{S} is sitting and writing a letter.")),
    "waving_hello": Situation(
        PoseFamily(arms=_both("waving"), legs=("standing",) + _both("step"), lean=("none",)),
        ("{S} is waving hello.", "{S} waves goodbye.", "{S} greets a friend from afar.", "{S} says hi with a wave.")),
    "pointing": Situation(
        PoseFamily(arms=_both("pointing"), legs=("standing",) + _both("step"), head_turn=(-10, 10)),
        ("{S} is pointing at something.", "{S} points the way.", "Look over there! {S} points ahead.",
         "{S} is showing someone the direction.")),
    "impatient": Situation(
        PoseFamily(arms=("hands_on_hips",), legs=("standing",), lean=("none",), head_tilt=(-12, 12)),
        ("{S} is waiting impatiently.", "{S} is annoyed and scolding someone.",
         "{S} stands there, hands on hips, impatient.", "{S} is losing {poss} patience.")),
    "superhero": Situation(
        PoseFamily(arms=("hands_on_hips",), legs=("wide_stance",), lean=("back", "none"), lean_deg=(5, 12),
                   head_nod=(-15, 0)),
        ("{S} strikes a superhero pose.", "{S} stands like a superhero.", "{S} is feeling confident and powerful.",
         "{S} poses like a comic-book hero.")),
    "relaxing": Situation(
        PoseFamily(arms=("behind_head",), legs=("standing", "sitting"), lean=("back",), lean_deg=(5, 15)),
        ("{S} is relaxing.", "{S} leans back and relaxes.", "{S} is chilling in the sun.", "{S} is taking a break.")),
    "picking_up": Situation(
        PoseFamily(arms=("front_bent", "both_forward", "reaching"), legs=("squatting",), head_nod=(20, 40)),
        ("{S} picks something up from the floor.", "{S} is crouching to pick up a box.",
         "{S} crouches to look at something on the ground.", "{S} is searching the floor.")),
    "tying_shoelaces": Situation(
        PoseFamily(arms=("front_bent",), legs=_both("kneeling"), lean=("forward",), lean_deg=(15, 30),
                   head_nod=(25, 40)),
        ("{S} is tying {poss} shoelaces.", "{S} kneels to tie {poss} shoe.", "{S} is fixing {poss} shoe on one knee.")),
    "bored_waiting": Situation(
        PoseFamily(arms=("crossed",), legs=("standing",), lean=("none",), head_tilt=(8, 20)),
        ("{S} is bored.", "{S} is waiting for the bus with {poss} arms crossed.", "{S} looks unimpressed.",
         "{S} is standing in line, waiting.")),
    "cold": Situation(
        PoseFamily(arms=("crossed",), legs=("standing",), lean=("forward",), lean_deg=(8, 15), head_nod=(10, 25)),
        ("{S} is cold.", "{S} is freezing and hugs {refl}.", "{S} shivers in the cold wind.")),
    "showing_muscles": Situation(
        PoseFamily(arms=("flexing",), legs=("standing", "wide_stance"), lean=("none",)),
        ("{S} is showing off {poss} muscles.", "{S} flexes like a bodybuilder.",
         "{S} poses at the gym flexing {poss} biceps.")),
    "asking_question": Situation(
        PoseFamily(arms=_both("one_up"), legs=("sitting", "standing"), lean=("none",)),
        ("{S} raises {poss} hand to ask a question.", "{S} knows the answer and raises {poss} hand.",
         "{S} volunteers in class.", "Pick me! {S} raises a hand.")),
    "bowing": Situation(
        PoseFamily(arms=("both_down",), legs=("standing",), lean=("forward",), lean_deg=(32, 40),
                   head_nod=(10, 30), head_turn=(-5, 5)),
        ("{S} bows to the audience.", "{S} takes a bow.", "{S} bows politely.", "{S} greets someone with a deep bow.")),
    "lunge_workout": Situation(
        PoseFamily(arms=("hands_on_hips",), legs=_both("lunge"), lean=("none",)),
        ("{S} is doing lunges.", "{S} is working out with a lunge.", "{S} does a lunge exercise at the gym.")),
    "about_to_hug": Situation(
        PoseFamily(arms=("both_forward",), legs=("standing",) + _both("step"), lean=("none",)),
        ("{S} is about to hug someone.", "{S} opens {poss} arms for a hug.", "{S} is going in for a big hug.")),
    "balancing": Situation(
        PoseFamily(arms=("t_pose", "both_up", "praying"), legs=_both("raise"), lean=("none",)),
        ("{S} balances on one leg.", "{S} does a yoga tree pose.", "{S} stands like a flamingo.")),
    "airplane": Situation(
        PoseFamily(arms=("t_pose",), legs=("standing",) + _both("step"), lean=("left", "right"), lean_deg=(10, 20)),
        ("{S} pretends to be an airplane.", "{S} is playing airplane with {poss} arms spread.",
         "{S} glides around like a plane.")),
    "zombie": Situation(
        PoseFamily(arms=("both_forward",), legs=_both("step"), head_nod=(10, 25)),
        ("{S} walks like a zombie.", "{S} is sleepwalking.", "{S} is pretending to be a zombie.")),
    "doing_squats": Situation(
        PoseFamily(arms=("both_forward",), legs=("squatting",), head_nod=(-10, 5)),
        ("{S} is doing squats.", "{S} squats with {poss} arms out in front.", "{S} is exercising with squats.")),
    "high_shelf": Situation(
        PoseFamily(arms=_both("one_up") + _both("reach"), legs=("standing",), head_nod=(-30, -12)),
        ("{S} reaches for the top shelf.", "{S} is trying to grab something high up.",
         "{S} reaches up to pick an apple from a tree.")),
    "sneaking": Situation(
        PoseFamily(arms=("front_bent", "both_down"), legs=("crouching",), lean=("forward",), lean_deg=(10, 25)),
        ("{S} is sneaking up on someone.", "{S} tiptoes quietly, crouched low.", "{S} creeps forward like a thief.")),
    "goalkeeper": Situation(
        PoseFamily(arms=("t_pose", "both_forward"), legs=("crouching", "wide_stance"), lean=("forward",),
                   lean_deg=(8, 20)),
        ("{S} is a goalkeeper waiting for the penalty kick.", "{S} gets ready to catch the ball.",
         "{S} guards the goal, ready to dive.")),
    "hailing_taxi": Situation(
        PoseFamily(arms=_both("one_up") + _both("waving"), legs=("standing",) + _both("step"), head_turn=(-40, 40)),
        ("{S} is hailing a taxi.", "{S} tries to get a cab's attention.", "{S} flags down a taxi on the street.")),
}

# More phrasings per situation in the words people type, short and long. Kept apart from ``phrasings`` and
# drawn from their own stream (``everyday_prompts``), so a corpus' first prompts stay what they were.
EVERYDAY = {
    "surrendering": ("hands up, surrendering", "{s} giving up with {poss} hands in the air", "surrender pose",
                     "Make {obj} put {poss} hands up like the police just showed up."),
    "tired_after_run": ("out of breath after running", "{s} bent over, exhausted", "tired runner catching breath",
                        "{S} just finished a marathon and can barely stand."),
    "proposing": ("proposing on one knee", "{s} down on one knee with a ring", "marriage proposal pose",
                  "{S} is popping the question."),
    "celebrating_goal": ("celebrating, arms up", "{s} cheering after scoring", "goal celebration",
                         "{S} just won the match and is going wild."),
    "praying": ("praying, hands together", "{s} in prayer", "prayer pose", "{S} closes {poss} eyes and prays."),
    "thinking_hard": ("thinking, hand on chin", "{s} thinking it over", "thinker pose",
                      "{S} is trying to figure something out."),
    "morning_stretch": ("big stretch, arms up", "{s} stretching after waking up", "morning stretch",
                        "{S} rolls out of bed and stretches up high."),
    "desk_work": ("sitting at a computer", "{s} typing at a desk", "office worker at a desk",
                  "{S} is busy working on {poss} laptop."),
    "waving_hello": ("waving hi", "{s} waving at a friend", "wave hello", "{S} spots a friend and waves."),
    "pointing": ("pointing at something", "{s} pointing over there", "pointing the way",
                 "{S} points out something in the distance."),
    "impatient": ("impatient, hands on hips", "{s} tapping {poss} foot, annoyed", "annoyed waiting pose",
                  "{S} has been kept waiting and is not happy about it."),
    "superhero": ("superhero pose", "{s} standing like superman", "power pose, hands on hips",
                  "{S} stands tall and proud like a hero."),
    "relaxing": ("relaxing, hands behind head", "{s} chilling out", "laid back pose",
                 "{S} kicks back and relaxes."),
    "picking_up": ("picking something up", "{s} squatting to grab a box", "lifting a box off the floor",
                   "{S} bends down to pick up something that fell."),
    "tying_shoelaces": ("tying shoes", "{s} kneeling to tie a shoelace", "fixing a shoelace",
                        "{S} stops to tie {poss} shoe."),
    "bored_waiting": ("bored, arms crossed", "{s} waiting around", "waiting in line",
                      "{S} is standing around with nothing to do."),
    "cold": ("freezing cold", "{s} hugging {refl} to keep warm", "shivering", "{S} forgot {poss} coat and is cold."),
    "showing_muscles": ("flexing muscles", "{s} showing off {poss} biceps", "bodybuilder flex",
                        "{S} shows off after a workout."),
    "asking_question": ("hand raised to ask", "{s} raising a hand in class", "student with a question",
                        "{S} wants to say something and puts a hand up."),
    "bowing": ("bowing", "{s} taking a bow", "polite bow", "{S} bows at the end of the show."),
    "lunge_workout": ("doing a lunge", "{s} doing lunges at the gym", "lunge exercise", "{S} is warming up with lunges."),
    "about_to_hug": ("going in for a hug", "{s} with open arms", "arms open for a hug",
                     "{S} is happy to see a friend and opens {poss} arms."),
    "balancing": ("balancing on one leg", "{s} in tree pose", "standing on one foot",
                  "{S} tries not to fall over on one leg."),
    "airplane": ("airplane arms", "{s} flying like a plane", "arms out like wings", "{S} runs around like an airplane."),
    "zombie": ("zombie walk", "{s} shambling like a zombie", "sleepwalker", "{S} walks with {poss} arms out like a zombie."),
    "doing_squats": ("doing squats", "{s} squatting at the gym", "squat exercise", "{S} is in the middle of a squat."),
    "high_shelf": ("reaching up high", "{s} grabbing something off a high shelf", "reaching for the top shelf",
                   "{S} stretches up to get a box down."),
    "sneaking": ("sneaking", "{s} creeping up quietly", "tiptoeing crouched", "{S} sneaks up to surprise someone."),
    "goalkeeper": ("goalie ready", "{s} ready to save a penalty", "goalkeeper stance",
                   "{S} waits in goal for the shot."),
    "hailing_taxi": ("hailing a cab", "{s} flagging down a taxi", "calling a taxi", "{S} waves down a cab."),
}

SUBJECTS = (("he", "his", "him", "himself"), ("she", "her", "her", "herself"),
            ("the person", "their", "them", "themselves"), ("the man", "his", "him", "himself"),
            ("the woman", "her", "her", "herself"), ("my character", "their", "them", "themselves"))


def prompt(name: str, rng, phrasing: int | None = None) -> str:
    """One phrasing of situation ``name`` with a random subject."""
    try:
        situation = SITUATIONS[name]
    except KeyError:
        raise KeyError(f"unknown situation {name!r}; expected one of {', '.join(SITUATIONS)}") from None
    i = int(rng.integers(len(situation.phrasings))) if phrasing is None else phrasing
    s, poss, obj, refl = SUBJECTS[int(rng.integers(len(SUBJECTS)))]
    return situation.phrasings[i].format(S=s[0].upper() + s[1:], s=s, poss=poss, obj=obj, refl=refl)


def prompts(name: str, rng, count: int = 3) -> list[str]:
    """``count`` prompts for one situation, each from a different phrasing while there are enough."""
    n = len(SITUATIONS[name].phrasings)
    order = rng.permutation(n)
    return [prompt(name, rng, int(order[i % n])) for i in range(count)]


def everyday_prompts(name: str, rng, count: int = 2) -> list[str]:
    """``count`` prompts from the situation's everyday phrasings (``EVERYDAY``), each a different one while
    there are enough; ``rng`` is a ``numpy.random.Generator``."""
    phrasings = EVERYDAY[name]
    order = rng.permutation(len(phrasings))
    out = []
    for i in range(count):
        s, poss, obj, refl = SUBJECTS[int(rng.integers(len(SUBJECTS)))]
        text = phrasings[int(order[i % len(phrasings)])].format(S=s[0].upper() + s[1:], s=s, poss=poss, obj=obj,
                                                                 refl=refl)
        out.append(text[:1].upper() + text[1:] if text.endswith(".") else text)
    return out


def sample(generator: PoseGenerator, rng, name: str | None = None) -> tuple[str, GeneratedPose]:
    """A situation (random unless named) and a pose of its family."""
    name = name or list(SITUATIONS)[int(rng.integers(len(SITUATIONS)))]
    pose = generator.sample(SITUATIONS[name].family)
    pose.label["situation"] = name
    return name, pose
