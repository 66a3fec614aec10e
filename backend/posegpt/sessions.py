"""Chat sessions: the token history (small, kept) and its KV cache (large, evictable).

A session holds every token id of the conversation so far, where each of its turns starts, the
preprocessed images with the position of their placeholders, and optionally the KV cache of a prefix of
those ids. Memory is bounded twice:
- KV caches: at most ``max_cached`` sessions keep one, and all caches together cover at most
  ``max_cached_tokens`` tokens (least recently used dropped first; ``kv_budget_tokens`` sizes that budget
  from the model and the device's memory); a cache unused for ``cache_ttl_s`` is dropped. A session
  without a cache is rebuilt transparently on its next turn by encoding its stored history (same ids,
  same images, so the same outputs). A stored cache never views a larger tensor (a batch's): it is
  copied to its own row's size, so the memory the store counts is the memory it holds.
- Histories: at most ``max_sessions`` sessions (LRU), each forgotten after ``session_ttl_s`` idle.
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field

import torch

from .errors import PoseGPTError
from .families import ImageInput

KVCache = list  # per layer (keys, values), each (1, kv_heads, cached_len, head_dim)


@dataclass
class Session:
    """``ids``: every token so far; ``images``: (start position of its placeholders, ImageInput) in order;
    ``cache`` covers ``ids[:cache_len]``."""

    session_id: str
    ids: list[int] = field(default_factory=list)
    images: list[tuple[int, ImageInput]] = field(default_factory=list)
    cache: KVCache | None = None
    cache_len: int = 0
    turns: int = 0
    text: str = ""  # "whole" templates: the conversation as text, as the published code kept it
    turn_starts: list[int] = field(default_factory=list)   # index in ids where each user turn begins
    user_spans: list[tuple[int, int]] = field(default_factory=list)  # (start, end) of each user message in ids
    last_used: float = field(default_factory=time.monotonic)

    def drop_cache(self):
        self.cache, self.cache_len = None, 0


class SessionStore:
    """Thread-safe map of session id → Session with the two-level LRU/TTL bounds described above."""

    def __init__(self, max_sessions: int = 1024, max_cached: int = 32, cache_ttl_s: float = 900.0,
                 session_ttl_s: float = 6 * 3600.0, max_cached_tokens: int | None = None, clock=time.monotonic):
        if max_sessions < 1 or max_cached < 0:
            raise ValueError("max_sessions must be ≥ 1 and max_cached ≥ 0")
        self.max_sessions, self.max_cached = max_sessions, max_cached
        self.cache_ttl_s, self.session_ttl_s = cache_ttl_s, session_ttl_s
        self.max_cached_tokens = max_cached_tokens
        self.clock = clock
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        self._lock = threading.RLock()
        self.evictions = 0  # KV caches dropped (for tests and logs)

    def ids(self) -> list[str]:
        with self._lock:
            self._expire()
            return list(self._sessions)

    def open(self, session_id: str) -> Session:
        """The session, created empty if new; marks it most recently used."""
        if not isinstance(session_id, str) or not session_id:
            raise PoseGPTError("bad_request", "session_id must be a non-empty string")
        with self._lock:
            self._expire()
            session = self._sessions.get(session_id)
            if session is None:
                session = self._sessions[session_id] = Session(session_id)
            self._sessions.move_to_end(session_id)
            session.last_used = self.clock()
            return session

    def get(self, session_id: str) -> Session:
        with self._lock:
            self._expire()
            if session_id not in self._sessions:
                raise PoseGPTError("unknown_session", f"no session {session_id!r}")
            return self._sessions[session_id]

    def reset(self, session_id: str) -> None:
        """Forget the history but keep the session id."""
        with self._lock:
            self.get(session_id)
            self._sessions[session_id] = Session(session_id)

    def close(self, session_id: str) -> None:
        with self._lock:
            self.get(session_id)
            del self._sessions[session_id]

    def store_cache(self, session: Session, cache: KVCache | None, cache_len: int) -> None:
        """Attach a KV cache covering ``session.ids[:cache_len]``, then enforce the bounds."""
        with self._lock:
            session.cache, session.cache_len = cache, cache_len
            session.last_used = self.clock()
            self._enforce()

    def evict_cache(self, session_id: str) -> None:
        """Drop one session's KV cache now (what memory pressure would do); its history stays."""
        with self._lock:
            self.get(session_id).drop_cache()
            self.evictions += 1

    def cached_tokens(self) -> int:
        """Tokens covered by all KV caches held now (what ``max_cached_tokens`` bounds)."""
        with self._lock:
            return sum(s.cache_len for s in self._sessions.values() if s.cache is not None)

    def cached_ids(self) -> list[str]:
        with self._lock:
            self._expire()
            return [sid for sid, s in self._sessions.items() if s.cache is not None]

    def _expire(self) -> None:
        now = self.clock()
        for sid in list(self._sessions):
            s = self._sessions[sid]
            if now - s.last_used > self.session_ttl_s:
                del self._sessions[sid]
            elif s.cache is not None and now - s.last_used > self.cache_ttl_s:
                s.drop_cache()
                self.evictions += 1

    def _enforce(self) -> None:
        self._expire()
        while len(self._sessions) > self.max_sessions:
            self._sessions.popitem(last=False)
        cached = [s for s in self._sessions.values() if s.cache is not None]  # LRU first
        total = sum(s.cache_len for s in cached)
        for k, s in enumerate(cached):
            over_tokens = self.max_cached_tokens is not None and total > self.max_cached_tokens
            if len(cached) - k <= self.max_cached and not over_tokens:
                break
            total -= s.cache_len
            s.drop_cache()
            self.evictions += 1


def cache_to_list(cache, keep: torch.Tensor | None = None, row: int = 0) -> KVCache:
    """A DynamicCache → per-layer (keys, values) of one batch ``row``, keeping the key positions ``keep``
    (1-D index tensor; all when None). Returns tensors of batch size 1 that own their memory: a slice of
    a batch's cache would keep the whole batch's tensor alive while the store counts one row."""
    out = []
    for layer in cache.layers:
        k, v = layer.keys[row:row + 1], layer.values[row:row + 1]
        if keep is not None:
            k, v = k[:, :, keep], v[:, :, keep]          # advanced indexing: already a copy of this row
        elif layer.keys.shape[0] > 1:
            k, v = k.clone(), v.clone()                  # a view into the batch: copy this row only
        out.append((k, v))
    return out


def kv_bytes_per_token(cache: KVCache) -> int:
    """Bytes one token of context takes in a KV cache like ``cache`` (every layer's keys and values)."""
    return sum(k.element_size() * k.shape[1] * k.shape[3] + v.element_size() * v.shape[1] * v.shape[3]
               for k, v in cache)


def kv_budget_tokens(bytes_per_token: int, device: torch.device, *, budget_bytes: int | None = None,
                     fraction: float = 0.4) -> int:
    """Tokens of KV cache to allow: ``budget_bytes`` when given, else ``fraction`` of the memory the device
    has free now (after the weights are loaded: CUDA's free memory, else the machine's available RAM)."""
    if budget_bytes is None:
        free = _free_memory(device)
        budget_bytes = int(free * fraction) if free else 4 * 1024 ** 3
    return max(1, budget_bytes // max(1, bytes_per_token))


def _free_memory(device: torch.device) -> int:
    if device.type == "cuda" and torch.cuda.is_available():
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0
