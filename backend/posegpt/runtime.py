"""PoseRuntime: one loaded PoseGPT serving many chat sessions (contract 3).

Two modes per turn:
- "direct": ONE forward pass over the new turn plus the forced answer prefix ending in `<POSE>`
  (template.direct_answer); the pose is read at the position before `<POSE>`. No decoding.
- "chat": token-by-token decoding over a KV cache (greedy when temperature == 0, else temperature/top-p
  sampling), stopping at the end token or ``max_new_tokens``; each `<POSE>` the model emits yields the
  hidden state of the step that emitted it (conventions page), so one reply can carry several poses.

Every turn only encodes tokens the session's KV cache does not cover yet (a prefix cache): the history is
never re-encoded unless its cache was evicted, and then it is rebuilt from the stored ids and images.
Concurrent direct requests run as one padded batch (``chat_batch``): left padding, an attention mask that
also hides the padding between each sample's cached prefix and its new tokens, explicit position ids.
The decoding loop is ours rather than ``generate`` because it must read the post-norm hidden state of
the exact step that emits `<POSE>`, honour cancellation, and give Qwen2-VL positions that stay correct
across a reused cache (``generate`` keeps those in mutable model state).
"""
from __future__ import annotations

import inspect
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from transformers import DynamicCache
from transformers.generation.logits_process import TopPLogitsWarper

from .attention import CAUSAL_TOKEN, block_causal_mask, block_ids, check_prompt_attention
from .checkpoint import complete_manifest, load_checkpoint, load_prompt_tokenizer
from .errors import PoseGPTError
from .families import ImageInput, make_family
from .model import PoseGPT, unwrap_backbone
from .results import ChatResult, pose_results
from .sessions import Session, SessionStore, cache_to_list, kv_budget_tokens, kv_bytes_per_token
from .templates import IMAGE_MARK, Template, TurnEncoder

MODES = ("direct", "chat")
MAX_BATCH = 16
MAX_NEW_TOKENS = 512  # chat mode stops at the end token or here, as the published chat script does
_DTYPES = {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16, "float16": torch.float16,
           "half": torch.float16, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """"auto" → cuda, else mps, else cpu."""
    if str(device) != "auto":
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def resolve_dtype(dtype: str | torch.dtype, device: torch.device) -> torch.dtype:
    """"auto" → bf16 on CUDA (fp16 where bf16 is unsupported), fp16 on MPS, fp32 on CPU."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float16 if device.type == "mps" else torch.float32
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be 'auto' or one of {sorted(_DTYPES)}, got {dtype!r}")
    return _DTYPES[dtype]


@dataclass
class _Turn:
    """A prepared turn: what to run (``ids[start:]`` over a cache of ``ids[:start]``) and how to commit it."""

    session: Session
    ids: list[int]                 # the session's ids after this turn's input (answer prefix included)
    images: list[tuple[int, ImageInput]]  # every image of the session with its placeholder start
    start: int                     # tokens already in the session's KV cache
    cache: list | None
    positions: torch.Tensor        # (P, len(ids))
    text: str = ""                 # "whole" templates: the conversation text up to the generation prompt
    turn_starts: list[int] = None  # where each user turn begins in ``ids`` (this one included)
    user_spans: list[tuple[int, int]] = None  # (start, end) of each user message in ``ids`` (block attention)
    trimmed: int = 0               # oldest whole turns dropped so that this one fits the context


class PoseRuntime:
    """A loaded model plus its sessions. Thread-safe: calls are serialised on one lock (one model)."""

    def __init__(self, model: PoseGPT, tokenizer, processor, manifest: dict, *, device: torch.device,
                 dtype: torch.dtype, sessions: SessionStore | None = None, warmup: bool = True,
                 prompt_tokenizer=None):
        self.model = model.eval()
        self.tokenizer, self.processor = tokenizer, processor
        self.manifest = complete_manifest(model, tokenizer, manifest)
        self.device, self.dtype = device, dtype
        base = unwrap_backbone(model.backbone)
        self.family = make_family(manifest["family"], base.config, processor, model.decoder)
        try:
            self.template = Template.from_dict(manifest["template"])
            self.turns = TurnEncoder(tokenizer, self.template, prompt_tokenizer)
            # The pose is read at the token before <POSE>: refuse a template whose direct answer puts another
            # token there than the model emits (a lone space piece, say) before any request is served.
            self.direct_answer_ids = self.turns.check_pose_follows()
        except ValueError as exc:
            raise PoseGPTError("bad_checkpoint", f"template: {exc}") from exc
        # A manifest written before the field existed means causal (attention.py).
        self.prompt_attention = self.manifest.get("prompt_attention", "causal")
        try:
            check_prompt_attention(self.prompt_attention)
        except ValueError as exc:
            raise PoseGPTError("bad_checkpoint", str(exc)) from exc
        if self.prompt_attention == "block" and self.template.encoding != "pieces":
            raise PoseGPTError("bad_checkpoint", "block prompt attention needs a 'pieces' template (user messages "
                               "are marked as their ids are built)")
        self.pose_id = model.pose_token_id
        self.stop_ids = {self.turns.end_id} | ({tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set())
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.turns.end_id
        # Control tokens a user must not be able to type in a "whole" conversation string.
        # Prompt tokens the published generate() never attended to: its pad id (the script sets pad = unk).
        self._masked_ids = set(self.manifest.get("prompt_tokenizer", {}).get("attention_masked_ids", []))
        self._control_texts = sorted(set(getattr(self.turns.prompt_tokenizer, "added", ()))
                                     | {t for t in tokenizer.all_special_tokens if t} | {self.manifest["pose_token"]})
        # An uncased vocabulary (the demo's WordPiece encoder) decodes "Sure" as "sure": its replies are shown
        # sentence-cased, which changes nothing but letters' case and the spaces before punctuation.
        probe = tokenizer("Sure", add_special_tokens=False)["input_ids"]
        self._uncased = tokenizer.decode(probe) == "sure"
        self.store = sessions or SessionStore()
        self._lock = threading.RLock()
        if warmup:
            self._warmup()

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_checkpoint(cls, path, device: str | torch.device = "auto", dtype: str | torch.dtype = "auto", *,
                        quantization: str | None = None, merge_adapter: bool = True, local_files_only: bool = True,
                        warmup: bool = True, **session_limits) -> "PoseRuntime":
        """Load a project checkpoint once. ``merge_adapter`` folds a LoRA adapter into the weights (faster
        inference); ``session_limits`` go to SessionStore (max_sessions, max_cached, max_cached_tokens,
        cache_ttl_s, session_ttl_s)."""
        device = resolve_device(device)
        dtype = resolve_dtype(dtype, device)
        model, tokenizer, processor, manifest = load_checkpoint(
            path, device=device, dtype=dtype, merge_adapter=merge_adapter, local_files_only=local_files_only,
            quantization=quantization)
        return cls(model, tokenizer, processor, manifest, device=device, dtype=dtype,
                   sessions=SessionStore(**session_limits), warmup=warmup,
                   prompt_tokenizer=load_prompt_tokenizer(manifest, path, tokenizer))

    @property
    def model_card(self) -> dict:
        m = self.manifest
        return {"backbone": m["backbone_class"], "family": m["family"], "accepts_images": self.family.accepts_images,
                "pose_token": m["pose_token"], "template": self.template.name,
                "direct_answer": self.template.direct_answer, "max_prompt_chars": int(m.get("max_prompt_chars", 4000)),
                "max_context_tokens": self.family.max_positions, "modes": list(MODES),
                "hidden_size": m.get("hidden_size"), "description": m.get("description", ""),
                "image_size": self.family.input_side,
                "kv_budget_tokens": self.store.max_cached_tokens, "max_cached_sessions": self.store.max_cached,
                "device": str(self.device), "dtype": str(self.dtype).replace("torch.", "")}

    # ------------------------------------------------------------------ sessions
    @property
    def sessions(self) -> list[str]:
        return self.store.ids()

    def reset(self, session_id: str) -> None:
        with self._lock:
            self.store.reset(session_id)

    def close(self, session_id: str) -> None:
        with self._lock:
            self.store.close(session_id)

    def set_kv_budget(self, tokens: int | None = None, gigabytes: float | None = None,
                      max_sessions: int | None = None) -> int:
        """Bound the KV caches the sessions keep: ``tokens`` of context in all (else ``gigabytes`` of cache,
        else 40 % of the device's memory free now, converted with this model's bytes per token) and at
        most ``max_sessions`` sessions holding one; least recently used caches go first and rebuild from
        their stored ids on their next turn. Returns the token budget."""
        with self._lock:
            if tokens is None:
                per_token = self._kv_bytes_per_token()
                tokens = kv_budget_tokens(per_token, self.device,
                                          budget_bytes=None if gigabytes is None else int(gigabytes * 1024 ** 3))
            if tokens < 1 or (max_sessions is not None and max_sessions < 1):
                raise ValueError("the KV budget and the session count must be at least 1")
            self.store.max_cached_tokens = int(tokens)
            if max_sessions is not None:
                self.store.max_cached = int(max_sessions)
            self.store.store_cache(Session("__budget__"), None, 0)      # enforce the new bounds now
            return int(tokens)

    def _kv_bytes_per_token(self) -> int:
        if getattr(self, "_kv_per_token", None) is None:
            scratch = Session("__kv__")
            self._run_direct([self._prepare(scratch, "warm up", [], "direct", 1, 0.0, 1.0)])
            self._kv_per_token = kv_bytes_per_token(scratch.cache)
        return self._kv_per_token

    # ------------------------------------------------------------------ public entry points
    def chat(self, session_id: str, prompt: str, images: list | None = None, mode: str = "direct",
             max_new_tokens: int = MAX_NEW_TOKENS, temperature: float = 0.0, top_p: float = 1.0, seed: int | None = None,
             should_stop: Callable[[], bool] | None = None,
             on_progress: Callable[[dict], None] | None = None) -> ChatResult:
        """One turn of ``session_id`` (created on first use). Raises PoseGPTError on bad input."""
        with self._lock:
            t0 = time.perf_counter()
            session = self.store.open(session_id)
            turn = self._prepare(session, prompt, images or [], mode, max_new_tokens, temperature, top_p)
            if should_stop is not None and should_stop():
                raise PoseGPTError("cancelled", "cancelled before the model ran")
            t1 = time.perf_counter()
            if mode == "direct":
                result = self._run_direct([turn])[0]
                if on_progress is not None:
                    on_progress({"tokens": len(self.direct_answer_ids)})
            else:
                result = self._run_chat(turn, max_new_tokens, temperature, top_p, seed, should_stop, on_progress)
            result.timings.update(prepare_s=t1 - t0, total_s=time.perf_counter() - t0)
            result.history_trimmed = turn.trimmed
            return result

    def chat_batch(self, requests: list[dict]) -> list[ChatResult | PoseGPTError]:
        """Run many requests (each a dict of ``chat``'s keyword arguments). Direct-mode requests for distinct
        sessions run together as one padded batch; a chat-mode request, or a second request for a session
        already in the batch, first flushes it, so each session sees its turns in order. A request that fails
        gets its PoseGPTError in its slot instead of a ChatResult."""
        results: list = [None] * len(requests)
        allowed = set(inspect.signature(self.chat).parameters)
        with self._lock:
            batch: list[tuple[int, _Turn]] = []
            for index, request in enumerate(requests):
                request = dict(request)
                unknown = set(request) - allowed
                mode = request.get("mode", "direct")
                if unknown:
                    results[index] = PoseGPTError("bad_request", f"unknown request fields {sorted(unknown)}")
                    continue
                sid = request.get("session_id")
                if mode != "direct" or any(t.session.session_id == sid for _, t in batch) or len(batch) >= MAX_BATCH:
                    self._flush(batch, results)
                    batch = []
                try:
                    if mode != "direct":
                        results[index] = self.chat(**request)
                        continue
                    stop = request.get("should_stop")
                    session = self.store.open(sid)
                    turn = self._prepare(session, request.get("prompt"), request.get("images") or [], "direct",
                                         request.get("max_new_tokens", MAX_NEW_TOKENS), request.get("temperature", 0.0),
                                         request.get("top_p", 1.0))
                    if stop is not None and stop():
                        raise PoseGPTError("cancelled", "cancelled before the model ran")
                    batch.append((index, turn))
                except PoseGPTError as exc:
                    results[index] = exc
            self._flush(batch, results)
        return results

    def _flush(self, batch, results) -> None:
        if not batch:
            return
        try:
            outs = self._run_direct([turn for _, turn in batch])
        except PoseGPTError as exc:
            outs = [exc] * len(batch)
        for (index, turn), out in zip(batch, outs):
            if not isinstance(out, PoseGPTError):
                out.history_trimmed = turn.trimmed
            results[index] = out

    # ------------------------------------------------------------------ preparing a turn
    def _prepare(self, session: Session, prompt, images: list, mode: str, max_new_tokens: int,
                 temperature: float, top_p: float) -> _Turn:
        if mode not in MODES:
            raise PoseGPTError("bad_request", f"mode must be one of {MODES}, got {mode!r}")
        if not isinstance(prompt, str) or not prompt.strip():
            raise PoseGPTError("empty_prompt", "the prompt is empty")
        limit = int(self.manifest.get("max_prompt_chars", 4000))
        if len(prompt) > limit:
            raise PoseGPTError("prompt_too_long", f"the prompt has {len(prompt)} characters; the limit is {limit}")
        if mode == "chat" and (max_new_tokens < 1 or temperature < 0 or not 0 < top_p <= 1):
            raise PoseGPTError("bad_request", "max_new_tokens must be ≥ 1, temperature ≥ 0 and 0 < top_p ≤ 1")
        marks = prompt.count(IMAGE_MARK)
        if images and not self.family.accepts_images:
            raise PoseGPTError("images_not_supported", f"the {self.family.name} backbone does not read images")
        if marks and not self.family.accepts_images:
            raise PoseGPTError("images_not_supported", f"the prompt names an {IMAGE_MARK} but this backbone reads no images")
        if marks > len(images):
            raise PoseGPTError("image_required", f"the prompt names {marks} {IMAGE_MARK} placeholder(s) but "
                               f"{len(images)} image(s) came with it")
        if marks and marks < len(images):
            raise PoseGPTError("bad_request", f"{len(images)} images for {marks} {IMAGE_MARK} placeholders")
        encoded = [self.family.encode_image(_check_image(im)) for im in images]
        content = self.turns.user_content(prompt, len(encoded))
        if self.template.encoding == "whole":
            return self._prepare_whole(session, prompt, content, encoded, mode, max_new_tokens)

        ids = list(session.ids) if session.ids else self.turns.start()
        first_new = len(ids)
        head, message, tail = self.turns.user_turn_parts(content, lambda k: self.family.placeholder_ids(encoded[k]))
        ids += head + message + tail
        user_spans = list(session.user_spans) + [(first_new + len(head), first_new + len(head) + len(message))]
        starts = _image_starts(ids, first_new, encoded, self.family)
        if mode == "direct":
            ids += self.direct_answer_ids
        budget = self._budget(mode)
        old_images, turn_starts, trimmed = list(session.images), list(session.turn_starts), 0
        turn_starts.append(first_new)
        if len(ids) > budget:
            ids, old_images, starts, turn_starts, user_spans, trimmed = _trim_history(
                ids, old_images, starts, turn_starts, user_spans, budget)
        if len(ids) > budget:
            raise PoseGPTError("prompt_too_long", f"the conversation needs {len(ids)} tokens; the context holds "
                               f"{self.family.max_positions}")
        all_images = old_images + list(zip(starts, encoded))
        positions = self.family.positions(ids, [im for _, im in all_images])
        start = session.cache_len if session.cache is not None and not trimmed else 0
        return _Turn(session=session, ids=ids, images=all_images, start=start,
                     cache=session.cache if start else None, positions=positions, turn_starts=turn_starts,
                     user_spans=user_spans, trimmed=trimmed)

    def _prepare_whole(self, session: Session, prompt: str, content: str, encoded: list, mode: str,
                       max_new_tokens: int) -> _Turn:
        """A "whole" template's turn: the conversation text so far plus this turn, tokenised whole as the
        published code did. The KV cache is reused up to the first id that differs from the cached ones
        (a chat reply re-tokenised from its text can differ from the ids generated)."""
        typed = [t for t in self._control_texts if t in prompt]
        if typed:
            raise PoseGPTError("bad_request", f"the prompt contains the model's control token {typed[0]!r}")
        images = [im for _, im in session.images] + encoded
        text = session.text + self.turns.user_text(content, first=not session.text)
        full = text + (self.turns.answer_text(self.template.direct_answer) if mode == "direct" else "")
        ids = self.turns.encode_text(full, lambda k: self.family.placeholder_ids(images[k]))
        if mode == "direct" and ids[-1] != self.pose_id:
            raise PoseGPTError("internal", "the direct answer did not end with the pose token in this context")
        self._check_budget(ids, mode, max_new_tokens)
        starts = _image_starts(ids, 0, images, self.family)
        all_images = list(zip(starts, images))
        positions = self.family.positions(ids, images)
        start, cache = 0, None
        if session.cache is not None:
            start = _common_prefix(session.ids[:session.cache_len], ids)
            for first, image in all_images:  # an image's features are computed whole: never start inside one
                if first < start < first + len(self.family.placeholder_ids(image)):
                    start = first
            start = min(start, len(ids) - 2)  # at least the last two tokens run (the pose is read at -2)
            if start > 0:
                cache = [(k[:, :, :start], v[:, :, :start]) for k, v in session.cache]
            else:
                start = 0
        return _Turn(session=session, ids=ids, images=all_images, start=start, cache=cache, positions=positions,
                     text=text)

    def _budget(self, mode: str) -> int:
        """Most tokens a turn's input may take. Chat mode needs room for one token and the end; it stops
        early where the context ends rather than reserving max_new_tokens."""
        return self.family.max_positions - (1 + len(self.turns.end_of_answer()) if mode == "chat" else 0)

    def _check_budget(self, ids: list[int], mode: str, max_new_tokens: int) -> None:
        budget = self._budget(mode)
        if len(ids) > budget:
            raise PoseGPTError("prompt_too_long", f"the conversation needs {len(ids)} tokens; the context holds "
                               f"{self.family.max_positions}")

    # ------------------------------------------------------------------ running
    @torch.inference_mode()
    def _forward(self, turns: list[_Turn]):
        """Run the uncached tail of each turn as one batch.

        Layout per row: [pad | cached prefix | pad | new tokens], cached part C = max prefix, new part N = max
        tail, all padding masked out. Under block prompt attention the model gets the 4-D mask that also
        lets each user message see itself whole (attention.py). Returns (hidden (B, N, H) of the new part,
        the batch DynamicCache, attention mask (B, C + N) of the real tokens).
        """
        rows = len(turns)
        tails = [t.ids[t.start:] for t in turns]
        c_max = max(t.start for t in turns)
        n_max = max(len(x) for x in tails)
        npos = turns[0].positions.shape[0]
        input_ids = torch.full((rows, n_max), self.pad_id, dtype=torch.long)
        mask = torch.zeros(rows, c_max + n_max, dtype=torch.long)
        positions = torch.zeros(npos, rows, n_max, dtype=torch.long)
        chunk_images: list[ImageInput] = []
        for r, (turn, tail) in enumerate(zip(turns, tails)):
            input_ids[r, n_max - len(tail):] = torch.tensor(tail)
            mask[r, c_max - turn.start:c_max] = 1
            mask[r, c_max + n_max - len(tail):] = 1
            positions[:, r, n_max - len(tail):] = turn.positions[:, turn.start:]
            chunk_images += [im for pos, im in turn.images if pos >= turn.start]
        attention = mask
        if self._masked_ids:  # hidden from attention, as the published generate() hid them; still cached
            attention = mask.clone()
            for r, turn in enumerate(turns):
                hidden_ids = torch.tensor([token in self._masked_ids for token in turn.ids])
                attention[r, _columns(turn, c_max, n_max)[hidden_ids]] = 0
        cache = DynamicCache(ddp_cache_data=self._batch_cache(turns, c_max)) if c_max else DynamicCache()
        attention = attention.to(self.device)
        if self.prompt_attention == "block":
            groups = torch.full((rows, c_max + n_max), CAUSAL_TOKEN, dtype=torch.long)
            for r, turn in enumerate(turns):
                groups[r, _columns(turn, c_max, n_max)] = block_ids(len(turn.ids), turn.user_spans)
            attention = block_causal_mask(self.family.text_config, attention, groups, query_length=n_max,
                                          dtype=self.dtype, cache=cache)
        out = self.model.decoder(
            input_ids=input_ids.to(self.device), attention_mask=attention,
            position_ids=(positions[0] if npos == 1 else positions).to(self.device), cache=cache, use_cache=True,
            **self.family.image_kwargs(chunk_images, self.device, self.dtype))
        return out.last_hidden_state, out.cache, mask

    def _batch_cache(self, turns: list[_Turn], c_max: int) -> list:
        if len(turns) == 1:
            return turns[0].cache
        layers = []
        for layer in range(len(next(t.cache for t in turns if t.cache))):
            ref = next(t.cache for t in turns if t.cache)[layer][0]
            keys = ref.new_zeros(len(turns), ref.shape[1], c_max, ref.shape[3])
            values = keys.clone()
            for r, t in enumerate(turns):
                if t.start:
                    keys[r, :, c_max - t.start:] = t.cache[layer][0][0]
                    values[r, :, c_max - t.start:] = t.cache[layer][1][0]
            layers.append((keys, values))
        return layers

    def _commit(self, turn: _Turn, ids: list[int], cache, mask_row: torch.Tensor | None, row: int = 0,
                answer: str = "") -> None:
        """The session now holds ``ids``; ``cache`` (row ``row``, real positions from ``mask_row``) covers a prefix.
        ``answer``: the reply's text, which "whole" templates keep as conversation text."""
        keep = None if mask_row is None or bool(mask_row.all()) else mask_row.nonzero()[:, 0].to(self.device)
        kv = cache_to_list(cache, keep, row)
        turn.session.ids = ids
        if self.template.encoding == "whole":
            turn.session.text = turn.text + self.turns.history_answer_text(answer)
        turn.session.images = turn.images
        turn.session.turn_starts = turn.turn_starts or []
        turn.session.user_spans = turn.user_spans or []
        turn.session.turns += 1
        self.store.store_cache(turn.session, kv, kv[0][0].shape[2])

    @torch.inference_mode()
    def _run_direct(self, turns: list[_Turn]) -> list[ChatResult]:
        t0 = time.perf_counter()
        hidden, cache, mask = self._forward(turns)
        forward_s = time.perf_counter() - t0
        d6, _ = self.model.pose_from_hidden(hidden[:, -2])  # the position before the trailing <POSE>
        text = self._decode(self.direct_answer_ids).strip()
        poses = pose_results(d6, [len(self.direct_answer_ids) - 1] * len(turns))
        results = []
        for r, (turn, pose) in enumerate(zip(turns, poses)):
            if isinstance(pose, PoseGPTError):
                results.append(pose)
                continue
            self._commit(turn, turn.ids + self.turns.end_of_answer(), cache, mask[r], r,
                         answer=self.template.direct_answer)
            results.append(ChatResult(text=text, poses=[pose], session_id=turn.session.session_id,
                                      token_ids=list(self.direct_answer_ids),
                                      timings={"forward_s": forward_s, "batch_size": float(len(turns)),
                                               "new_tokens": float(len(turn.ids) - turn.start),
                                               "cached_tokens": float(turn.start)}))
        if len(turns) == 1 and isinstance(results[0], PoseGPTError):
            raise results[0]
        return results

    @torch.inference_mode()
    def _run_chat(self, turn: _Turn, max_new_tokens, temperature, top_p, seed, should_stop, on_progress) -> ChatResult:
        t0 = time.perf_counter()
        hidden, cache, _ = self._forward([turn])
        prefill_s = time.perf_counter() - t0
        generator = torch.Generator(device="cpu")
        if seed is not None:
            generator.manual_seed(int(seed))
        else:
            generator.seed()
        warp = TopPLogitsWarper(top_p) if top_p < 1.0 else None
        next_pos = int(turn.positions.max()) + 1
        npos = turn.positions.shape[0]
        total = len(turn.ids)
        max_new_tokens = min(max_new_tokens, self.family.max_positions - total - len(self.turns.end_of_answer()))
        attention = torch.tensor([[0 if t in self._masked_ids else 1 for t in turn.ids]], device=self.device)
        reply: list[int] = []
        pose_states: list[tuple[int, torch.Tensor]] = []
        last = hidden[:, -1]  # (1, H): the state whose next-token prediction we are making
        stopped_by_end = False
        while True:
            logits = self.model.lm_head(last).float()[0]
            token = _choose(logits, temperature, warp, generator)
            if token == self.pose_id:
                pose_states.append((len(reply), last[0]))
            if token in self.stop_ids:
                stopped_by_end = True
                break
            reply.append(token)
            if on_progress is not None:
                on_progress({"tokens": len(reply)})
            if should_stop is not None and should_stop():
                raise PoseGPTError("cancelled", f"cancelled after {len(reply)} tokens")
            if len(reply) >= max_new_tokens:
                break
            pos = torch.full((npos, 1, 1), next_pos, dtype=torch.long, device=self.device)
            total += 1
            attention = torch.cat([attention, attention.new_ones(1, 1)], dim=1)
            out = self.model.decoder(input_ids=torch.tensor([[token]], device=self.device),
                                     attention_mask=attention,
                                     position_ids=pos[0] if npos == 1 else pos, cache=cache, use_cache=True)
            cache, last, next_pos = out.cache, out.last_hidden_state[:, -1], next_pos + 1
        decode_s = time.perf_counter() - t0 - prefill_s
        poses = []
        if pose_states:
            d6, _ = self.model.pose_from_hidden(torch.stack([h for _, h in pose_states]))
            poses = pose_results(d6, [index for index, _ in pose_states])
            for pose in poses:
                if isinstance(pose, PoseGPTError):
                    raise pose
        # History: the real reply ids (`<POSE>` included) and a well-formed end, whatever stopped decoding.
        # The cache covers every token fed so far: the prompt and all reply tokens but the last one.
        text = self._decode(reply)
        # "whole" templates keep the reply as the published script did: decoded with its end token.
        history = self._decode(reply + [self.turns.end_id]) if stopped_by_end else text
        self._commit(turn, turn.ids + reply + self.turns.end_of_answer(), cache, None, answer=history)
        return ChatResult(text=text.strip(), poses=poses, session_id=turn.session.session_id, token_ids=reply,
                          timings={"prefill_s": prefill_s, "decode_s": decode_s, "new_tokens": float(len(reply)),
                                   "prompt_tokens": float(len(turn.ids) - turn.start),
                                   "cached_tokens": float(turn.start), "stopped_by_end": float(stopped_by_end)})

    def _decode(self, ids: list[int]) -> str:
        decode = getattr(self.turns.prompt_tokenizer, "decode", None)
        text = decode(ids) if decode is not None else self.tokenizer.decode(ids, skip_special_tokens=False)
        return _sentence_case(text) if self._uncased else text

    def _warmup(self) -> None:
        """One throwaway direct pass so the first real request does not pay for lazy initialisation."""
        scratch = Session("__warmup__")
        self._run_direct([self._prepare(scratch, "warm up", [], "direct", 1, 0.0, 1.0)])


def _sentence_case(text: str) -> str:
    """"sure, here is the pose : <POSE>" → "Sure, here is the pose: <POSE>"."""
    text = re.sub(r"\s+([:;,.!?])", r"\1", text)
    return re.sub(r"(^\s*|[.!?]\s+)([a-z])", lambda m: m.group(1) + m.group(2).upper(), text)


def _choose(logits: torch.Tensor, temperature: float, warp, generator) -> int:
    if temperature <= 0:
        return int(torch.argmax(logits))
    scores = (logits / temperature)[None]
    if warp is not None:
        scores = warp(None, scores)
    probs = torch.softmax(scores, dim=-1)[0].cpu()
    return int(torch.multinomial(probs, 1, generator=generator))


def _check_image(image):
    if not hasattr(image, "convert") or not hasattr(image, "size"):
        raise PoseGPTError("bad_request", f"images must be PIL images, got {type(image).__name__}")
    if min(image.size) < 1:
        raise PoseGPTError("bad_request", "an image is empty")
    return image


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def _trim_history(ids: list[int], images: list, starts: list[int], turn_starts: list[int],
                  user_spans: list[tuple[int, int]], budget: int, headroom: float = 0.75):
    """Drop the oldest whole turns until ``ids`` fits ``budget``, keeping the system part before the first
    turn; aim for ``headroom`` of it, so the turns after this one reuse the rebuilt cache instead of
    trimming (and re-encoding) again at once. The newest turn (``turn_starts[-1]``) is never dropped.
    Returns (ids, old images, new images' starts, turn starts, user message spans, turns dropped),
    positions shifted."""
    prefix = turn_starts[0]
    candidates = turn_starts[1:]                       # cut here: drop every turn before this one
    if not candidates:
        return ids, images, starts, turn_starts, user_spans, 0
    fits = [cut for cut in candidates if len(ids) - (cut - prefix) <= budget * headroom]
    cut = fits[0] if fits else next((c for c in candidates if len(ids) - (c - prefix) <= budget), candidates[-1])
    shift = cut - prefix
    kept_images = [(pos - shift, image) for pos, image in images if pos >= cut]
    return (ids[:prefix] + ids[cut:], kept_images, [pos - shift for pos in starts],
            [prefix] + [t - shift for t in turn_starts if t > cut],
            [(a - shift, b - shift) for a, b in user_spans if a >= cut],
            sum(t < cut for t in turn_starts))


def _columns(turn: _Turn, c_max: int, n_max: int) -> torch.Tensor:
    """Column of each of ``turn.ids`` in its batch row [pad | cached prefix | pad | new tokens]."""
    i = torch.arange(len(turn.ids))
    return torch.where(i < turn.start, c_max - turn.start + i, c_max + n_max - len(turn.ids) + i)


def _image_starts(ids: list[int], first: int, images: list[ImageInput], family) -> list[int]:
    """Start index of each new image's placeholder run in ``ids`` (searching from ``first``)."""
    starts, pos = [], first
    for image in images:
        head = family.placeholder_ids(image)
        while ids[pos:pos + len(head)] != head:
            pos += 1
            if pos > len(ids):
                raise RuntimeError("image placeholders missing from the encoded turn")
        starts.append(pos)
        pos += len(head)
    return starts
