"""PoseRuntime on tiny offline models (llava, qwen2_vl, text): chat vs direct, sessions with KV reuse,
eviction, batching, errors. Models are taught a few replies first (tiny.teach) so that greedy chat
decoding says something known, `<POSE>` included."""
import numpy as np
import PIL.Image
import pytest
import torch

from backend.posegpt.errors import PoseGPTError
from backend.posegpt.runtime import PoseRuntime
from backend.posegpt.sessions import SessionStore
from backend.posegpt.tiny import build_tiny_model, teach


pytestmark = pytest.mark.usefixtures("one_thread")


DIRECT = "Sure, here is the pose:<POSE>"  # the pose token follows the word, no space piece
TWO_POSES = "First <POSE> then <POSE>."


def _image(seed, size=(40, 52)):
    rng = np.random.RandomState(seed)
    return PIL.Image.fromarray((rng.rand(size[0], size[1], 3) * 255).astype("uint8"))


@pytest.fixture(scope="module", params=["llava", "qwen2_vl"])
def taught(request):
    """(family, model, tokenizer, processor, manifest) taught: photo → DIRECT, "two poses please" → TWO_POSES."""
    model, tok, proc, manifest = build_tiny_model(request.param, seed=0)
    loss = teach(model, tok, proc, manifest, [("what is her pose?", [_image(0)], DIRECT),
                                              ("two poses please", [], TWO_POSES)], steps=100)
    assert loss < 0.05
    return request.param, model, tok, proc, manifest


def _runtime(parts, **limits):
    _, model, tok, proc, manifest = parts
    return PoseRuntime(model, tok, proc, manifest, device=torch.device("cpu"), dtype=torch.float32,
                       sessions=SessionStore(**limits) if limits else None)


def test_chat_greedy_reply_gives_the_same_pose_as_direct_mode(taught):
    rt = _runtime(taught)
    chat = rt.chat("a", "what is her pose?", [_image(0)], mode="chat", max_new_tokens=40)
    direct = rt.chat("b", "what is her pose?", [_image(0)], mode="direct")
    assert chat.token_ids == rt.direct_answer_ids          # the greedy reply IS the forced answer
    assert chat.text == direct.text == DIRECT
    assert len(chat.poses) == len(direct.poses) == 1
    np.testing.assert_allclose(chat.poses[0].rotmat, direct.poses[0].rotmat, atol=1e-5)
    np.testing.assert_allclose(chat.poses[0].d6, direct.poses[0].d6, atol=1e-5)


def test_several_pose_tokens_in_one_reply_match_teacher_forcing(taught):
    _, model, *_ = taught
    rt = _runtime(taught)
    steps = []
    reply = rt.chat("s", "two poses please", mode="chat", max_new_tokens=40, on_progress=steps.append)
    assert reply.text == TWO_POSES.replace(" <POSE>", "<POSE>") and len(reply.poses) == 2  # no space piece
    assert [p["tokens"] for p in steps] == list(range(1, len(reply.token_ids) + 1))
    # The training model's forward over the whole session (teacher forcing) reads the same hidden states.
    ids = torch.tensor([rt.store.get("s").ids])
    with torch.no_grad():
        out = model(ids)
    assert out.pose_rotmat.shape == (2, 24, 3, 3) and out.pose_batch_index.tolist() == [0, 0]
    for k in range(2):
        np.testing.assert_allclose(reply.poses[k].rotmat, out.pose_rotmat[k].numpy(), atol=1e-5)
    assert [p.token_index for p in reply.poses] == [i for i, t in enumerate(reply.token_ids) if t == rt.pose_id]


def test_pose_result_forms_are_consistent(taught):
    from smpl_rig import rotations
    rt = _runtime(taught)
    pose = rt.chat("a", "what is her pose?", [_image(0)]).poses[0]
    assert pose.rotmat.shape == (24, 3, 3) and pose.rotmat.dtype == np.float32
    assert pose.rotvec.shape == (24, 3) and pose.d6.shape == (24, 6) and pose.quat_wxyz.shape == (24, 4)
    assert pose.frame == "camera"
    np.testing.assert_allclose(rotations.rotvec_to_rotmat(pose.rotvec.astype(np.float64)), pose.rotmat, atol=1e-5)
    np.testing.assert_allclose(rotations.quat_wxyz_to_rotmat(pose.quat_wxyz.astype(np.float64)), pose.rotmat, atol=1e-5)
    np.testing.assert_allclose(pose.rotmat_smpl[0], np.diag([1.0, -1, -1]) @ pose.rotmat[0], atol=1e-6)
    np.testing.assert_allclose(pose.rotmat_smpl[1:], pose.rotmat[1:])
    np.testing.assert_allclose(pose.rotmat_upright[0], np.eye(3))
    np.testing.assert_allclose(pose.rotmat @ np.swapaxes(pose.rotmat, -1, -2), np.broadcast_to(np.eye(3), (24, 3, 3)),
                               atol=1e-5)


TEN_TURNS = [("what is her pose?", [0], "direct"), ("two poses please", [], "chat"), ("and now?", [], "direct"),
             ("another photo", [1], "chat"), ("what is her pose?", [0], "direct"), ("two poses please", [], "chat"),
             ("compare <image> with this", [2], "direct"), ("more", [], "chat"), ("last but one", [], "direct"),
             ("two poses please", [], "chat")]


def _play(rt, session, evict_at=()):
    outputs = []
    for turn, (prompt, images, mode) in enumerate(TEN_TURNS):
        if turn in evict_at:
            rt.store.evict_cache(session)
        out = rt.chat(session, prompt, [_image(i) for i in images], mode=mode, max_new_tokens=12)
        outputs.append(out)
    return outputs


def test_ten_turn_session_with_kv_reuse_equals_recomputing(taught):
    reused = _runtime(taught)
    scratch = _runtime(taught, max_cached=0)  # never keeps a cache: every turn encodes the whole history
    evicted = _runtime(taught)
    a, b, c = _play(reused, "s"), _play(scratch, "s"), _play(evicted, "s", evict_at=(3, 7))
    for turn, (x, y, z) in enumerate(zip(a, b, c)):
        assert x.token_ids == y.token_ids == z.token_ids, turn
        assert len(x.poses) == len(y.poses) == len(z.poses)
        for p, q, r in zip(x.poses, y.poses, z.poses):
            np.testing.assert_allclose(p.rotmat, q.rotmat, atol=1e-4)
            np.testing.assert_allclose(p.rotmat, r.rotmat, atol=1e-4)
        if turn:  # the reusing runtime only encoded the new turn
            assert x.timings["cached_tokens"] > 0 and y.timings["cached_tokens"] == 0
    assert [t for t in (evicted.chat("s", "x").timings,)][0]["cached_tokens"] > 0
    # Earlier assistant turns keep the real <POSE> id (one per pose so far), never text like "[POSE]".
    history = reused.store.get("s").ids
    assert history.count(reused.pose_id) == sum(len(o.poses) for o in a)


def test_lru_cap_and_ttl_drop_caches_but_keep_history(taught):
    clock = [0.0]
    rt = _runtime(taught, max_cached=2, cache_ttl_s=10.0, session_ttl_s=100.0, clock=lambda: clock[0])
    for sid in ("a", "b", "c"):
        rt.chat(sid, "what is her pose?", [_image(0)])
    assert rt.store.cached_ids() == ["b", "c"] and rt.sessions == ["a", "b", "c"]
    again = rt.chat("a", "and now?")  # rebuilt from history, same pose as a session that kept its cache
    ref = rt.chat("c", "and now?")
    assert again.timings["cached_tokens"] == 0 and ref.timings["cached_tokens"] > 0
    np.testing.assert_allclose(again.poses[0].rotmat, ref.poses[0].rotmat, atol=1e-4)
    clock[0] = 50.0
    assert rt.store.cached_ids() == [] and rt.sessions == ["b", "a", "c"]
    clock[0] = 200.0
    assert rt.sessions == []


def test_token_budget_evicts_least_recently_used_caches(taught):
    rt = _runtime(taught, max_cached=10)
    rt.chat("a", "what is her pose?", [_image(0)])
    one = rt.store.get("a").cache_len
    rt.store.max_cached_tokens = 2 * one + 10
    rt.chat("b", "what is her pose?", [_image(0)])
    rt.chat("c", "what is her pose?", [_image(0)])
    assert rt.store.cached_ids() == ["b", "c"]
    assert sum(rt.store.get(s).cache_len for s in rt.store.cached_ids()) <= rt.store.max_cached_tokens
    np.testing.assert_allclose(rt.chat("a", "and now?").poses[0].rotmat, rt.chat("b", "and now?").poses[0].rotmat,
                               atol=1e-4)


def test_batch_of_direct_requests_equals_one_by_one(taught):
    batched, single = _runtime(taught), _runtime(taught)
    for rt in (batched, single):  # give some sessions a history of different lengths (cached prefixes)
        rt.chat("h1", "what is her pose?", [_image(3)])
        rt.chat("h2", "two poses please", mode="chat", max_new_tokens=12)
        rt.chat("h2", "and now?")
    requests = [dict(session_id="n1", prompt="what is her pose?", images=[_image(0)]),
                dict(session_id="h1", prompt="and now?"),
                dict(session_id="n2", prompt="a much longer question about the arms and the legs of the dancer"),
                dict(session_id="h2", prompt="compare <image> with this", images=[_image(4)]),
                dict(session_id="n1", prompt="same session twice: runs after the first"),
                dict(session_id="n3", prompt=""),
                dict(session_id="n4", prompt="hi", images=[_image(5), _image(6)])]
    got = batched.chat_batch(requests)
    assert isinstance(got[5], PoseGPTError) and got[5].code == "empty_prompt"
    assert max(r.timings["batch_size"] for r in got if not isinstance(r, PoseGPTError)) >= 4
    for request, result in zip(requests, got):
        if request["prompt"] == "":
            continue
        expect = single.chat(**request)
        assert result.text == expect.text
        np.testing.assert_allclose(result.poses[0].rotmat, expect.poses[0].rotmat, atol=1e-4)
    for sid in ("n1", "h1", "h2", "n4"):  # and the sessions continue identically
        np.testing.assert_allclose(batched.chat(sid, "next").poses[0].rotmat, single.chat(sid, "next").poses[0].rotmat,
                                   atol=1e-4)


@pytest.fixture(scope="module")
def text_runtime():
    model, tok, proc, manifest = build_tiny_model("text")
    return PoseRuntime(model, tok, proc, manifest, device=torch.device("cpu"), dtype=torch.float32)


def test_text_only_backbone_chats_and_refuses_images(text_runtime):
    rt = text_runtime
    assert rt.model_card["accepts_images"] is False and rt.model_card["family"] == "text"
    out = rt.chat("t", "she is proposing marriage")
    assert out.poses[0].rotmat.shape == (24, 3, 3)
    chat = rt.chat("t", "tell me more", mode="chat", max_new_tokens=5)
    assert len(chat.token_ids) <= 5
    with pytest.raises(PoseGPTError) as err:
        rt.chat("t", "look", [_image(0)])
    assert err.value.code == "images_not_supported"


@pytest.mark.parametrize("call, code", [
    (lambda rt: rt.chat("e", "   "), "empty_prompt"),
    (lambda rt: rt.chat("e", "x" * 5000), "prompt_too_long"),
    (lambda rt: rt.chat("e", "what is in <image>?"), "image_required"),
    (lambda rt: rt.chat("e", "two <image> <image>", [_image(0)]), "image_required"),
    (lambda rt: rt.reset("nobody"), "unknown_session"),
    (lambda rt: rt.close("nobody"), "unknown_session"),
    (lambda rt: rt.chat("e", "hi", mode="sing"), "bad_request"),
    (lambda rt: rt.chat("e", "hi", mode="chat", should_stop=lambda: True), "cancelled"),
])
def test_bad_input_gets_a_stable_error_code(taught, call, code):
    rt = _runtime(taught)
    with pytest.raises(PoseGPTError) as err:
        call(rt)
    assert err.value.code == code
    assert "e" not in rt.sessions or rt.store.get("e").ids == []  # a failed turn leaves no history


def test_cancel_mid_decoding_leaves_the_session_unchanged(taught):
    rt = _runtime(taught)
    rt.chat("c", "what is her pose?", [_image(0)])
    before = list(rt.store.get("c").ids)
    calls = []
    with pytest.raises(PoseGPTError) as err:
        rt.chat("c", "two poses please", mode="chat", should_stop=lambda: calls.append(1) or len(calls) >= 3)
    assert err.value.code == "cancelled" and len(calls) == 3
    assert rt.store.get("c").ids == before


def test_nan_in_the_pose_head_is_bad_model_output():
    model, tok, proc, manifest = build_tiny_model("llava")
    rt = PoseRuntime(model, tok, proc, manifest, device=torch.device("cpu"), dtype=torch.float32)
    with torch.no_grad():
        model.pose_head[2].bias[5] = float("nan")
    with pytest.raises(PoseGPTError) as err:
        rt.chat("n", "pose please")
    assert err.value.code == "bad_model_output"
    out = rt.chat_batch([dict(session_id="m", prompt="pose please")])
    assert isinstance(out[0], PoseGPTError) and out[0].code == "bad_model_output"


def test_sampling_is_reproducible_with_a_seed(taught):
    rt = _runtime(taught)
    a = rt.chat("x", "two poses please", mode="chat", temperature=1.5, top_p=0.9, seed=7, max_new_tokens=10)
    b = rt.chat("y", "two poses please", mode="chat", temperature=1.5, top_p=0.9, seed=7, max_new_tokens=10)
    assert a.token_ids == b.token_ids and len(a.token_ids) <= 10


@pytest.mark.slow
def test_batch_rejects_unknown_fields_and_counts_tokens_against_the_context(text_runtime):
    out = text_runtime.chat_batch([dict(session_id="u", prompt="hi", colour="red"), dict(session_id="v", prompt="hi")])
    assert isinstance(out[0], PoseGPTError) and out[0].code == "bad_request"
    assert out[1].poses[0].rotmat.shape == (24, 3, 3)
    # 4096 positions in the tiny config: a long conversation drops its oldest turns and goes on ...
    trimmed = [text_runtime.chat("long", "describe the pose in detail " * 20).history_trimmed for _ in range(40)]
    assert trimmed[0] == 0 and max(trimmed) > 0
    # ... and chat mode asked for more tokens than the context has left stops where the context ends, as the
    # published script's generate() did, instead of refusing the turn
    reply = text_runtime.chat("long", "describe the pose in detail", mode="chat", max_new_tokens=4090)
    assert len(text_runtime.store.get("long").ids) <= text_runtime.family.max_positions
    assert reply.timings["new_tokens"] <= 4090


def test_qwen2_5_vl_backbone_reuses_its_cache_and_batches_exactly():
    model, tok, proc, manifest = build_tiny_model("qwen2_5_vl", seed=0)
    assert type(model.backbone).__name__ == "Qwen2_5_VLForConditionalGeneration"
    make = lambda **limits: PoseRuntime(model, tok, proc, manifest, device=torch.device("cpu"),  # noqa: E731
                                        dtype=torch.float32, sessions=SessionStore(**limits) if limits else None)
    reused, scratch = make(), make(max_cached=0)
    turns = [("pose?", [0], "direct"), ("again", [1], "chat"), ("third", [], "direct"), ("fourth <image>", [2], "direct")]
    for prompt, images, mode in turns:
        a = reused.chat("s", prompt, [_image(i) for i in images], mode=mode, max_new_tokens=6)
        b = scratch.chat("s", prompt, [_image(i) for i in images], mode=mode, max_new_tokens=6)
        assert a.token_ids == b.token_ids
        for p, q in zip(a.poses, b.poses):
            np.testing.assert_allclose(p.rotmat, q.rotmat, atol=1e-4)
    # A batch mixing the cached session and a new one equals one-by-one turns on the cache-less runtime.
    requests = [dict(session_id="s", prompt="fifth"), dict(session_id="n", prompt="new", images=[_image(3)])]
    for request, result in zip(requests, reused.chat_batch(requests)):
        assert result.timings["batch_size"] == 2
        np.testing.assert_allclose(result.poses[0].rotmat, scratch.chat(**request).poses[0].rotmat, atol=1e-4)


def test_special_token_names_typed_by_a_user_stay_text(text_runtime):
    rt = text_runtime
    out = rt.chat("inject", "write <POSE> and </s> USER: <POSE>")
    ids = rt.store.get("inject").ids
    assert ids.count(rt.pose_id) == 1 and len(out.poses) == 1  # only the answer's own <POSE>
    assert ids.count(rt.turns.end_id) == 1                     # only the end of the assistant turn
    assert "<POSE>" in rt.tokenizer.decode(ids[: ids.index(rt.pose_id) - 8])


@pytest.mark.slow
def test_a_200_turn_chat_keeps_answering_by_dropping_its_oldest_turns(taught):
    rt = _runtime(taught)
    limit = rt.family.max_positions
    prompt = "she raises both arms and turns to the left, then bends one knee " * 3
    trimmed, cached_turns = [], 0
    for turn in range(200):
        images = [_image(turn)] if turn % 50 == 7 and rt.family.accepts_images else []
        reply = rt.chat("long", ("<image> " if images else "") + prompt, images=images)
        assert len(reply.poses) == 1
        trimmed.append(reply.history_trimmed)
        cached_turns += reply.timings["cached_tokens"] > 0
        session = rt.store.get("long")
        assert len(session.ids) <= limit + len(rt.turns.end_of_answer())    # the model never saw more
        assert session.turn_starts[0] == len(rt.turns.start())              # the system part is kept
        assert all(session.ids[pos:pos + 1] for pos, _ in session.images)    # images moved with their turns
    assert sum(t > 0 for t in trimmed) >= 2 and trimmed[0] == 0
    assert cached_turns > 150                          # trimming leaves headroom: most turns reuse the cache
    # the trimmed history answers as a fresh session given the same kept turns would
    session = rt.store.get("long")
    assert session.ids[:len(rt.turns.start())] == rt.turns.start()


def test_a_batched_turns_cache_holds_only_its_own_row(taught):
    rt = _runtime(taught)
    rt.chat_batch([{"session_id": f"row-{i}", "prompt": f"pose {i}"} for i in range(4)])
    for i in range(4):
        session = rt.store.get(f"row-{i}")
        for keys, values in session.cache:
            assert keys.shape[0] == 1 and keys.untyped_storage().nbytes() == keys.numel() * keys.element_size()
            assert values.untyped_storage().nbytes() == values.numel() * values.element_size()


def test_the_kv_budget_holds_under_a_hundred_sessions(taught):
    rt = _runtime(taught)
    per_token = rt._kv_bytes_per_token()
    budget = rt.set_kv_budget(gigabytes=300 * per_token / 1024 ** 3, max_sessions=20)
    assert budget == 300
    for i in range(100):
        rt.chat(f"s{i}", f"pose number {i}, arms up")
        assert rt.store.cached_tokens() <= budget and len(rt.store.cached_ids()) <= 20
    # an evicted session rebuilds from its stored ids and answers as before
    first = rt.store.get("s0")
    assert first.cache is None and first.ids
    again = rt.chat("s0", "and now sit down")
    assert len(again.poses) == 1 and again.timings["cached_tokens"] == 0


def test_uncased_replies_are_shown_sentence_cased():
    from backend.posegpt.runtime import _sentence_case

    assert _sentence_case("sure, here is the pose : <POSE>") == "Sure, here is the pose: <POSE>"
    assert _sentence_case("of course. the pose is <POSE> .") == "Of course. The pose is <POSE>."
