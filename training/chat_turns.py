"""Question and answer templates that turn pose records into chats (the project's own wording).

Image questions carry the ``<image>`` placeholder; text questions a ``{description}`` slot; every answer
carries exactly one ``<POSE>`` (one pose per sample, as in the paper). Which template a sample gets is
drawn with the caller's ``random.Random`` so a run is reproducible.
"""
from __future__ import annotations

import random

from backend.posegpt.model import POSE_TOKEN
from backend.posegpt.templates import IMAGE_MARK

from .data.records import InstructionRecord, PoseRecord

IMAGE_QUESTIONS = (
    "What is the SMPL pose of the person in the middle of this picture?",
    "Estimate the 3D body pose of the person shown here as SMPL parameters.",
    "Could you give me the SMPL pose of the person in this photo?",
    "Look at the person at the centre of the image. What 3D pose are they in?",
    "Please recover the body pose, in SMPL form, of the person in this image.",
    "Which SMPL pose matches the person this image is centred on?",
    "Describe the posture of the central person as an SMPL pose.",
)

TEXT_QUESTIONS = (
    "{description} Can you give the SMPL pose of this person?",
    "Here is how someone is standing or moving: {description} What is their SMPL pose?",
    "Generate the 3D body pose described below as SMPL parameters. {description}",
    "{description} Please turn this description into an SMPL pose.",
    "Read this and pose the body accordingly: {description}",
    "A person is described as follows. {description} Which SMPL pose fits?",
    "Create an SMPL body pose for this description: {description}",
    "{description} Show me that pose in 3D.",
    "Based on the description \"{description}\", what would the SMPL pose be?",
    "I need a 3D pose of a person. {description} Can you produce it?",
)

# A later turn of a chat that already holds a pose: the artist describes the next one. The description
# alone, or with a word that says it replaces the pose before.
FOLLOW_UP_QUESTIONS = (
    "Now {lowered}",
    "{description}",
    "Next pose. {description}",
    "Change the pose. {description}",
    "Now make it this: {description}",
    "Instead, {lowered}",
)

DESCRIBED_PERSON_QUESTION = "{description} Can you give the SMPL pose of this person?"

POSE_ANSWERS = (
    "Sure, it is <POSE>.",
    "Here is the SMPL pose: <POSE>.",
    "Of course. The pose is <POSE>.",
    "This is the body pose: <POSE>.",
    "The SMPL pose of this person is <POSE>.",
    "Sure, here it is: <POSE>.",
    "The pose looks like this: <POSE>.",
    "Certainly, the 3D pose is <POSE>.",
    "Here you go: <POSE>.",
)


def _describe(caption: str) -> str:
    caption = " ".join(caption.split())
    return caption if caption.endswith((".", "!", "?")) else caption + "."


def answer_pool(direct_answer: str | None = None, pool: int = 0) -> tuple[str, ...]:
    """The answers to draw from: the backend template's forced direct-mode answer first (so direct mode
    meets a prefix it was trained on), then ours; ``pool`` > 0 keeps only the first ``pool``."""
    answers = POSE_ANSWERS
    if direct_answer:
        forced = direct_answer if direct_answer.rstrip().endswith(".") else direct_answer.rstrip() + "."
        answers = (forced,) + tuple(a for a in POSE_ANSWERS if a != forced)
    return answers[:pool] if pool else answers


def pose_turns(record: PoseRecord, rng: random.Random, *, answers: tuple[str, ...] = POSE_ANSWERS,
               pool: int = 0) -> list[tuple[str, str]]:
    """The (role, text) turns of a pose record: one question, one answer with ``<POSE>``.

    Text records ask with the caption; image records without a caption ask about the centred person;
    image records WITH a caption (reasoning-based estimation) ask about the described person.
    ``pool`` > 0 restricts the questions to the first ``pool`` templates (overfitting probes)."""
    answer = rng.choice(answers)
    if record.kind == "text":
        if not record.caption:
            raise ValueError("a text→pose record needs a caption")
        question = rng.choice(TEXT_QUESTIONS[:pool or None]).format(description=_describe(record.caption))
    elif record.kind == "image":
        question = (DESCRIBED_PERSON_QUESTION.format(description=_describe(record.caption)) if record.caption
                    else rng.choice(IMAGE_QUESTIONS[:pool or None]))
        question = IMAGE_MARK + "\n" + question
    else:
        raise ValueError(f"unknown pose record kind {record.kind!r}")
    return [("user", question), ("assistant", answer)]


def follow_up_turns(record: PoseRecord, rng: random.Random, *,
                    answers: tuple[str, ...] = POSE_ANSWERS) -> list[tuple[str, str]]:
    """The turns of a text record asked as a later turn of a chat (see ``FOLLOW_UP_QUESTIONS``)."""
    if record.kind != "text" or not record.caption:
        raise ValueError("a follow-up turn needs a text→pose record with a caption")
    description = _describe(record.caption)
    question = rng.choice(FOLLOW_UP_QUESTIONS).format(description=description,
                                                      lowered=description[:1].lower() + description[1:])
    return [("user", question), ("assistant", rng.choice(answers))]


def edit_turns(record: PoseRecord, rng: random.Random, *,
               answers: tuple[str, ...] = POSE_ANSWERS) -> list[tuple[str, str]]:
    """An edit of the pose before ("Now raise the left arm higher."): the instruction is the record's
    caption, asked as written (training.corpus.edits phrases it), answered with the edited pose."""
    if record.kind != "text" or not record.caption:
        raise ValueError("an edit turn needs a text→pose record with the instruction as its caption")
    return [("user", record.caption), ("assistant", rng.choice(answers))]


def record_turns(record: PoseRecord | InstructionRecord, rng: random.Random, *,
                 answers: tuple[str, ...] = POSE_ANSWERS, pool: int = 0) -> list[tuple[str, str]]:
    """Turns for any record; instruction chats are used as they are."""
    if isinstance(record, InstructionRecord):
        return list(record.turns)
    return pose_turns(record, rng, answers=answers, pool=pool)
