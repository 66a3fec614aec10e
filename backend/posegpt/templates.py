"""Conversation templates and their tokenisation, shared by inference and training.

Two encodings, chosen per checkpoint by ``Template.encoding``:
- "pieces" (the project's own models): a conversation is tokenised piece by piece (system, each user
  turn, each assistant answer) and the ids are concatenated, never re-tokenised from the joined text. A
  session's ids only ever grow by appending, so the KV cache of earlier turns stays valid, and training
  (``encode_conversation``) sees exactly the ids inference builds.
- "whole" (published checkpoints): the conversation is written out as one string, exactly as the
  authors' code wrote it, and tokenised whole by the checkpoint's prompt tokenizer
  (``prompt_tokenizer.py``), split only at images. A model answers best to the ids it was trained on.
Either way assistant turns keep the pose token (the published code wrote earlier poses back as the plain
text "[POSE]", a train/inference mismatch; ``history_pose_text`` restores that on request).
Images are written `<image>` in user text; each becomes the family's placeholder ids (see families.py).
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from .model import POSE_TOKEN

IMAGE_MARK = "<image>"
# Whitespace written before the pose token in template or answer text ("it is <POSE>") is not a token: the
# model emits <POSE> straight after the word, as the published model emits [SEG] after "▁is" (its
# tokenizer strips whitespace next to added tokens). A lone space piece there would be the state the
# pose is read from, a state the model never saw before a pose.
_SPACE_BEFORE_POSE = re.compile(r"\s+(?=" + re.escape(POSE_TOKEN) + ")")

ENCODINGS = ("pieces", "whole")

VICUNA_SYSTEM = ("A chat between a curious human and an artificial intelligence assistant. The assistant "
                 "gives helpful, detailed, and polite answers to the human's questions.")


@dataclass(frozen=True)
class Template:
    """How turns are laid out. Every field is plain text; ``end_token`` is a token name (e.g. ``</s>``)."""

    name: str
    system: str                   # text of the system part, separators included
    user_prefix: str              # before the user's content
    user_suffix: str              # after the user's content
    assistant_prefix: str         # the generation prompt ends with this
    answer_prefix: str            # what the model writes first in an answer (e.g. " " for Vicuna)
    end_token: str                # closes an assistant turn (the EOS token)
    after_end: str = ""           # text after end_token (ChatML puts a newline there)
    image_text: str = IMAGE_MARK + "\n"  # how an image is announced in user text when the prompt names none
    add_bos: bool = True
    direct_answer: str = "Sure, here is the pose: <POSE>"  # forced answer of direct mode, ends with the pose token
    encoding: str = "pieces"      # "pieces" or "whole" (module docstring)
    pose_follows: str = ""        # the token the model emits just before the pose token ("▁is" for ChatPose);
                                  # when set, the runtime checks the direct answer against it at load
    history_pose_text: str = ""   # "whole" only: write earlier poses into the history as this text ("[POSE]",
                                  # as the published chat script did) instead of keeping the pose token

    def __post_init__(self):
        if self.encoding not in ENCODINGS:
            raise ValueError(f"template encoding must be one of {ENCODINGS}, got {self.encoding!r}")
        if not self.direct_answer.rstrip().endswith(POSE_TOKEN):
            raise ValueError(f"the template's direct_answer must end with {POSE_TOKEN}: {self.direct_answer!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Template":
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown template fields: {sorted(unknown)}")
        return cls(**data)

    def jinja(self) -> str:
        """An equivalent Hugging Face chat template (for tools that read ``tokenizer.chat_template``)."""
        esc = lambda s: s.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n")  # noqa: E731
        return ("{{ '" + esc(self.system) + "' }}{% for m in messages %}{% if m['role'] == 'user' %}"
                "{{ '" + esc(self.user_prefix) + "' + m['content'] + '" + esc(self.user_suffix) + "' }}"
                "{% else %}{{ '" + esc(self.assistant_prefix + self.answer_prefix) + "' + m['content'] + '"
                + esc(self.end_token + self.after_end) + "' }}{% endif %}{% endfor %}"
                "{% if add_generation_prompt %}{{ '" + esc(self.assistant_prefix) + "' }}{% endif %}")


VICUNA_V1 = Template(
    name="vicuna_v1", system=VICUNA_SYSTEM + " ", user_prefix="USER: ", user_suffix=" ",
    assistant_prefix="ASSISTANT:", answer_prefix=" ", end_token="</s>")

CHATML = Template(
    name="chatml", system="<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n",
    user_prefix="<|im_start|>user\n", user_suffix="<|im_end|>\n", assistant_prefix="<|im_start|>assistant\n",
    answer_prefix="", end_token="<|im_end|>", after_end="\n", image_text=IMAGE_MARK, add_bos=False)

# Vicuna's turns without the system sentence: for models trained from scratch (the demo), where those ~30
# tokens carry nothing, cost time on every step and, while attention is still nearly uniform, dilute the
# state the pose is read from.
VICUNA_V1_NO_SYSTEM = Template(
    name="vicuna_v1_no_system", system="", user_prefix="USER: ", user_suffix=" ",
    assistant_prefix="ASSISTANT:", answer_prefix=" ", end_token="</s>")

# The same turns for a BERT-family decoder (the demo's pretrained WordPiece encoder): its [CLS] opens the
# conversation (add_bos) and its [SEP] ends each answer, the two markers it was pretrained with.
BERT_CHAT = Template(
    name="bert_chat", system="", user_prefix="USER: ", user_suffix=" ", assistant_prefix="ASSISTANT:",
    answer_prefix=" ", end_token="[SEP]")

TEMPLATES = {t.name: t for t in (VICUNA_V1, VICUNA_V1_NO_SYSTEM, CHATML, BERT_CHAT)}


class TurnEncoder:
    """Token ids for the pieces of a conversation under one template.

    ``image_ids(k)`` is a callable giving the placeholder ids of the k-th image of the piece being encoded.
    """

    def __init__(self, tokenizer, template: Template, prompt_tokenizer=None):
        self.tokenizer = tokenizer
        self.template = template
        if template.encoding == "whole" and prompt_tokenizer is None:
            from .prompt_tokenizer import HFChunkTokenizer
            prompt_tokenizer = HFChunkTokenizer(tokenizer, template.add_bos)
        self.prompt_tokenizer = prompt_tokenizer
        self._fixed = {template.system, template.user_prefix, template.user_suffix, template.assistant_prefix,
                       template.after_end, template.answer_prefix + template.direct_answer, template.image_text}
        self._pieces: dict[str, list[int]] = {}
        self.end_id = tokenizer.convert_tokens_to_ids(template.end_token)
        if self.end_id is None or self.end_id == tokenizer.unk_token_id:
            raise ValueError(f"the tokenizer has no token {template.end_token!r} that ends assistant turns")

    def text(self, text: str) -> list[int]:
        """Ids of template text or of an answer: special-token names in it (`<POSE>`, `</s>`) become those tokens."""
        if not text:
            return []
        cached = self._pieces.get(text)
        if cached is None:
            cached = self.tokenizer(_SPACE_BEFORE_POSE.sub("", text), add_special_tokens=False)["input_ids"]
            if text in self._fixed:  # template pieces recur every turn; user text does not
                self._pieces[text] = cached
        return list(cached)

    def literal(self, text: str) -> list[int]:
        """Ids of user text: a user typing "<POSE>" or "</s>" gets those characters, never the special tokens
        (which would fake a pose or end the turn)."""
        return self.tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"] if text else []

    def start(self) -> list[int]:
        bos = [self.tokenizer.bos_token_id] if self.template.add_bos and self.tokenizer.bos_token_id is not None else []
        return bos + self.text(self.template.system)

    def user_content(self, content: str, num_images: int) -> str:
        """The user text with one `<image>` mark per image (added in front when the prompt names none)."""
        marks = content.count(IMAGE_MARK)
        if marks == 0 and num_images:
            content = self.template.image_text * num_images + content
        return content

    def user_turn(self, content: str, image_ids) -> list[int]:
        """``content`` already holds its `<image>` marks; ends with the generation prompt."""
        head, message, tail = self.user_turn_parts(content, image_ids)
        return head + message + tail

    def user_turn_parts(self, content: str, image_ids) -> tuple[list[int], list[int], list[int]]:
        """``user_turn`` in three parts: the user marker, the user's message (its text and image
        placeholders: what block prompt attention reads bidirectionally, attention.py) and the suffix up
        to the generation prompt."""
        message: list[int] = []
        for k, piece in enumerate(content.split(IMAGE_MARK)):
            if k:
                message += list(image_ids(k - 1))
            message += self.literal(piece)
        return (self.text(self.template.user_prefix), message,
                self.text(self.template.user_suffix) + self.text(self.template.assistant_prefix))

    def answer(self, text: str) -> list[int]:
        """An assistant answer written as text (direct mode, training targets), without the end token."""
        return self.text(self.template.answer_prefix + text)

    def end_of_answer(self) -> list[int]:
        return [self.end_id] + self.text(self.template.after_end)

    # ------------------------------------------------------------------ "whole" encoding
    def user_text(self, content: str, first: bool) -> str:
        """A user turn as conversation text, ending with the generation prompt (system text first)."""
        t = self.template
        return (t.system if first else "") + t.user_prefix + content + t.user_suffix + t.assistant_prefix

    def answer_text(self, answer: str) -> str:
        """An answer as it goes into the conversation text (without the end token)."""
        return self.template.answer_prefix + answer

    def history_answer_text(self, answer: str) -> str:
        """An answer as the history keeps it: stripped, closed by the end token, earlier poses written as
        ``history_pose_text`` when the template asks for it (the published script's "[POSE]")."""
        t = self.template
        answer = answer.strip().replace(t.end_token, "")
        if t.history_pose_text:  # the published script: .replace("[SEG] ", "[POSE]").replace("[SEG]", "[POSE]")
            answer = answer.replace(POSE_TOKEN + " ", t.history_pose_text).replace(POSE_TOKEN, t.history_pose_text)
        return self.answer_text(answer) + t.end_token + t.after_end

    def encode_text(self, text: str, image_ids) -> list[int]:
        """Ids of a whole conversation string: split only at `<image>`, each piece tokenised whole."""
        from .prompt_tokenizer import split_at_images

        return split_at_images(text, IMAGE_MARK, self.prompt_tokenizer, image_ids)

    def check_pose_follows(self) -> list[int]:
        """The direct answer's ids in context, checked: they end with the pose token, the token before it is
        the one the template says the model emits there, and it is never a bare space piece (whose state
        the model never saw before a pose). Returns the answer's ids (after the generation prompt)."""
        t = self.template
        pose_id = self.tokenizer.convert_tokens_to_ids(POSE_TOKEN)
        if t.encoding == "whole":
            prompt = self.user_text("What is the pose?", first=True)
            before = self.encode_text(prompt, _no_images)
            ids = self.encode_text(prompt + self.answer_text(t.direct_answer), _no_images)
            if ids[:len(before)] != before:
                raise ValueError("the direct answer changes the tokens of the prompt before it")
            ids = ids[len(before):]
        else:
            ids = self.answer(t.direct_answer)
        if len(ids) < 2 or ids[-1] != pose_id:
            raise ValueError(f"the direct answer {t.direct_answer!r} must end with the pose token")
        before_pose = self.tokenizer.convert_ids_to_tokens(ids[-2])
        if not before_pose.strip("▁Ġ \t\n") or not self.tokenizer.decode([ids[-2]]).strip():
            raise ValueError(f"the direct answer {t.direct_answer!r} puts a bare space piece ({before_pose!r}) "
                             f"before {POSE_TOKEN}: the pose would be read from a state the model never saw "
                             "before a pose; write the pose token straight after the word")
        if t.pose_follows and before_pose != t.pose_follows:
            raise ValueError(f"the direct answer puts {before_pose!r} before {POSE_TOKEN}, but the template says "
                             f"the model emits {t.pose_follows!r} there")
        return ids


def encode_conversation(tokenizer, template: Template, messages: list[dict],
                        image_ids=None) -> tuple[list[int], list[int]]:
    """Training-side tokenisation: ``messages`` = [{"role": "user"|"assistant", "content": str}, ...].

    ``image_ids(k)`` gives the placeholder ids of the k-th image counted over the whole conversation.
    A user turn already ends with the generation prompt. Returns ``(input_ids, labels)`` with labels = -100 everywhere except assistant answers and their end
    token (what the model must learn to write).
    """
    ids, labels, _ = encode_conversation_spans(tokenizer, template, messages, image_ids)
    return ids, labels


def encode_conversation_spans(tokenizer, template: Template, messages: list[dict],
                              image_ids=None) -> tuple[list[int], list[int], list[tuple[int, int]]]:
    """``encode_conversation`` plus the (start, end) span of each user message in ``input_ids`` (its text
    and image placeholders, without the template's markers), for block prompt attention."""
    if template.encoding != "pieces":
        raise ValueError(f"training encodes conversations piece by piece; template {template.name!r} uses the "
                         f"{template.encoding!r} encoding of a published checkpoint")
    enc = TurnEncoder(tokenizer, template)
    ids = enc.start()
    labels = [-100] * len(ids)
    spans = []
    seen = 0
    for message in messages:
        if message["role"] == "user":
            content = message["content"]
            offset = seen
            head, said, tail = enc.user_turn_parts(
                content, (lambda k, o=offset: image_ids(o + k)) if image_ids else _no_images)
            seen += content.count(IMAGE_MARK)
            spans.append((len(ids) + len(head), len(ids) + len(head) + len(said)))
            piece = head + said + tail
            ids += piece
            labels += [-100] * len(piece)
        elif message["role"] == "assistant":
            piece = enc.answer(message["content"]) + enc.end_of_answer()
            ids += piece
            labels += piece
        else:
            raise ValueError(f"unknown role {message['role']!r}; expected 'user' or 'assistant'")
    return ids, labels, spans


def _no_images(k):
    raise ValueError("the conversation names an <image> but no image_ids callable was given")
