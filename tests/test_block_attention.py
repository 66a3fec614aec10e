"""Block prompt attention (backend/posegpt/attention.py) on a tiny LLaVA whose language side is a causal BERT,
the demo's architecture: each user message reads itself whole, everything else stays causal.

The reference everywhere is one forward over the whole conversation under a mask written out here from
the user spans (0 = attend, -inf = hidden), independent of the transformers mask builder the runtime and
training use: the runtime's incremental, cached, batched passes and the training forward must all equal it.
"""
from __future__ import annotations

import numpy as np
import PIL.Image
import pytest
import torch

from backend.posegpt.attention import block_causal_mask, block_ids
from backend.posegpt.errors import PoseGPTError
from backend.posegpt.runtime import PoseRuntime
from backend.posegpt.templates import Template, encode_conversation_spans
from backend.posegpt.tiny import build_tiny_model
from training.collate import EncodedSample, collate
from training.data.records import PoseRecord
from training.model_setup import remix_tiny_backbone
from training.train import forward_batch

pytestmark = pytest.mark.usefixtures("one_thread")
TOL = 1e-5


def _image(seed):
    rng = np.random.RandomState(seed)
    return PIL.Image.fromarray((rng.rand(40, 52, 3) * 255).astype("uint8"))


@pytest.fixture(scope="module", params=["sdpa", "eager"])
def bert(request):
    """(model, tokenizer, processor, manifest): a tiny random LLaVA + causal BERT under one attention kernel.

    Re-drawn so that states depend on the whole prompt and the head is steep: at transformers' 0.02 init
    the pose moved by 1e-6 between causal and block, too little for a 1e-5 comparison to tell the two
    apart (measured); now it moves by about 0.02."""
    model, tok, proc, manifest = build_tiny_model("llava", seed=0, hidden=32, text_model="bert")
    remix_tiny_backbone(model.backbone, seed=0)
    with torch.no_grad():
        model.pose_head[2].weight.mul_(20)
    model.backbone.set_attn_implementation(request.param)
    assert model.decoder.language_model.config._attn_implementation == request.param
    return model, tok, proc, manifest


def _runtime(bert, attention: str | None):
    model, tok, proc, manifest = bert
    manifest = {k: v for k, v in manifest.items() if k != "prompt_attention"}
    if attention is not None:
        manifest["prompt_attention"] = attention
    return PoseRuntime(model, tok, proc, manifest, device=torch.device("cpu"), dtype=torch.float32, warmup=False)


def _reference_mask(length: int, spans) -> torch.Tensor:
    """(1, 1, L, L) additive float mask written out by hand: causal, or the same user message."""
    groups = block_ids(length, spans)
    seen = torch.ones(length, length).tril().bool() | ((groups[:, None] == groups[None, :]) & (groups[:, None] >= 0))
    return torch.zeros(length, length).masked_fill(~seen, float("-inf"))[None, None]


@torch.no_grad()
def _full_poses(rt: PoseRuntime, session_id: str, images) -> np.ndarray:
    """The rotations of every `<POSE>` of a session's conversation, from one forward over all of it."""
    session = rt.store.get(session_id)
    ids = torch.tensor([session.ids])
    hidden = rt.model.decoder(input_ids=ids, attention_mask=_reference_mask(len(session.ids), session.user_spans),
                              **rt.family.image_kwargs([rt.family.encode_image(im) for im in images],
                                                       rt.device, rt.dtype)).last_hidden_state
    before_pose = (ids[0] == rt.pose_id).nonzero()[:, 0] - 1
    return rt.model.pose_from_hidden(hidden[0, before_pose])[1].numpy()


def _span_texts(rt: PoseRuntime, session_id: str) -> list[str]:
    """What each stored user span of a session holds, as text (the spans are checked, not trusted)."""
    session = rt.store.get(session_id)
    return [rt.tokenizer.decode(session.ids[a:b]) for a, b in session.user_spans]


def _conversation(rt: PoseRuntime, session_id: str, evict_before_last: bool = False) -> list:
    """Three turns: a picture (direct), a chat turn (a few decoded tokens), a text prompt (direct)."""
    poses = rt.chat(session_id, "what is the pose of this person?", [_image(0)]).poses
    reply = rt.chat(session_id, "now make her lean to the side", mode="chat", max_new_tokens=4)
    poses += reply.poses
    if evict_before_last:
        rt.store.evict_cache(session_id)
    poses += rt.chat(session_id, "Jumping in the air with arms spread wide.").poses
    return [p.rotmat for p in poses]


def test_block_mask_pattern():
    """What the runtime and training hand the model: causal + each user message whole, padding hidden."""
    from transformers import BertConfig

    config = BertConfig(is_decoder=True)
    spans = [(1, 4), (5, 7)]
    padding = torch.tensor([[0, 1, 1, 1, 1, 1, 1, 1, 1]])               # one left pad
    groups = torch.cat([torch.tensor([-1]), block_ids(8, spans)])[None]
    expected = _reference_mask(8, spans)[0, 0] == 0
    for kernel in ("sdpa", "eager"):
        config._attn_implementation = kernel
        mask = block_causal_mask(config, padding, groups, query_length=9, dtype=torch.float32)
        seen = mask if kernel == "sdpa" else mask == 0                    # sdpa: bool; eager: additive float
        assert seen.shape == (1, 1, 9, 9) and (mask.dtype == torch.bool) == (kernel == "sdpa")
        assert torch.equal(seen[0, 0, 1:, 1:], expected) and not seen[0, 0, :, 0].any()


def test_causal_or_absent_field_is_the_plain_causal_model(bert):
    """Existing checkpoints: no field and "causal" give the same bits, and what the model gives alone."""
    absent, causal = _runtime(bert, None), _runtime(bert, "causal")
    assert absent.prompt_attention == causal.prompt_attention == "causal"
    a, c = _conversation(absent, "s"), _conversation(causal, "s")
    for x, y in zip(a, c):
        assert np.array_equal(x, y)
    session = causal.store.get("s")
    with torch.no_grad():
        out = causal.model(torch.tensor([session.ids]), pixel_values=causal.family.image_kwargs(
            [causal.family.encode_image(_image(0))], causal.device, causal.dtype)["pixel_values"])
    np.testing.assert_allclose(np.stack(c), out.pose_rotmat.numpy(), atol=TOL)


def test_block_session_turns_equal_one_forward_over_the_conversation(bert):
    rt = _runtime(bert, "block")
    served = _conversation(rt, "s")
    assert _span_texts(rt, "s")[1:] == ["now make her lean to the side", "Jumping in the air with arms spread wide."]
    np.testing.assert_allclose(np.stack(served), _full_poses(rt, "s", [_image(0)]), atol=TOL)
    # A cache rebuilt from the stored history (eviction) reads the same spans.
    rebuilt = _conversation(rt, "r", evict_before_last=True)
    np.testing.assert_allclose(np.stack(rebuilt), np.stack(served), atol=TOL)


def test_block_batch_of_direct_requests_equals_each_alone(bert):
    prompts = ["sit", "A dancer spinning on one foot with both arms raised above the head.", "wave hello"]
    batched, alone = _runtime(bert, "block"), _runtime(bert, "block")
    for rt in (batched, alone):                 # histories of different lengths, cached
        rt.chat("b", "He is sitting on a chair.")
        rt.chat("c", "what is the pose?", [_image(1)])
    results = batched.chat_batch([{"session_id": sid, "prompt": p} for sid, p in zip("abc", prompts)])
    assert all(r.timings["batch_size"] == 3 for r in results)
    for sid, prompt, result in zip("abc", prompts, results):
        np.testing.assert_allclose(result.poses[0].rotmat, alone.chat(sid, prompt).poses[0].rotmat, atol=TOL)


def test_training_forward_reads_the_pose_state_the_runtime_reads(bert):
    """Same weights, same conversation: the training batch (right-padded, block mask from the collate's
    groups) gives the runtime's poses, so training and serving mask prompts alike."""
    model, tok, proc, manifest = bert
    rt = _runtime(bert, "block")
    prompts = ["<image>\nwhat is the pose of this person?", "Now raise the left arm."]
    served = [rt.chat("s", prompts[0], [_image(0)]).poses[0].rotmat, rt.chat("s", prompts[1]).poses[0].rotmat]
    template = Template.from_dict(manifest["template"])
    image = rt.family.encode_image(_image(0))
    samples = []
    for turns in (prompts, prompts[1:]):                                # a shorter chat pads the batch
        messages = [m for p in turns for m in ({"role": "user", "content": p},
                                                {"role": "assistant", "content": template.direct_answer})]
        images = [image] if "<image>" in turns[0] else []
        ids, labels, spans = encode_conversation_spans(tok, template, messages,
                                                       lambda k, images=images: rt.family.placeholder_ids(images[k]))
        samples.append(EncodedSample(ids, labels, images, rt.family.positions(ids, images),
                                     np.eye(3)[None].repeat(24, 0), "text", earlier_poses=[np.eye(3)[None].repeat(24, 0)]
                                     * (len(turns) - 1), user_spans=spans))
    assert samples[0].input_ids == rt.store.get("s").ids[:len(samples[0].input_ids)]
    assert samples[0].user_spans == rt.store.get("s").user_spans
    batch = collate(samples, tok.pad_token_id, rt.family, "block")
    with torch.no_grad():
        out = forward_batch(model.eval(), batch, rt.family, torch.device("cpu"), torch.float32)
    np.testing.assert_allclose(out.pose_rotmat[:2].numpy(), np.stack(served), atol=TOL)


@pytest.mark.parametrize("attention", ["causal", "block"])
def test_first_word_of_a_prompt_sees_its_last_only_under_block(bert, attention):
    rt = _runtime(bert, attention)

    def first_word_state(prompt):
        session = rt.store.open(f"probe {prompt}")
        turn = rt._prepare(session, prompt, [], "direct", 1, 0.0, 1.0)
        hidden, _, _ = rt._forward([turn])
        first = turn.user_spans[-1][0] - (len(turn.ids) - hidden.shape[1])
        return hidden[0, first]

    up, down = first_word_state("arms raised up"), first_word_state("arms raised down")
    change = float((up - down).abs().max())
    if attention == "block":
        assert change > 1e-2
    else:
        assert change < 1e-7


def test_manifest_values_the_runtime_refuses(bert):
    with pytest.raises(PoseGPTError, match="prompt_attention"):
        _runtime(bert, "bidirectional")


def test_a_block_run_trains_exports_and_serves_under_block(tmp_path):
    """model.prompt_attention=block: the loop trains under the mask, the export records it, the runtime
    reads it, and the served poses are the training model's (evaluation under the same mask)."""
    from training.config import config_from_dict
    from training.evaluate import predict_poses
    from training.model_setup import make_family_for
    from training.synthetic import write_synthetic_dataset
    from training.train import train

    write_synthetic_dataset(tmp_path / "data", text=8, images=2, instructions=4, image_size=32, caption_words=(3, 5))
    result = train(config_from_dict({
        "model": {"tiny_family": "llava", "lora_r": 4, "lora_alpha": 8, "gradient_checkpointing": False,
                  "prompt_attention": "block"},
        "data": {"synthetic_dir": str(tmp_path / "data"), "max_length": 512, "mix": {"text": 1, "instruction": 1}},
        "optim": {"lr": 5e-3, "warmup_steps": 1},
        "train": {"output_dir": str(tmp_path / "run"), "max_steps": 2, "batch_size": 2, "save_every": 0,
                  "eval_every": 0, "progress": False, "mixed_precision": "no", "device": "cpu",
                  "export_dtype": "fp32"}}))
    assert all(np.isfinite(step["loss"]) for step in result["history"])
    rt = PoseRuntime.from_checkpoint(result["final"], device="cpu", dtype="float32", warmup=False)
    assert rt.manifest["prompt_attention"] == rt.prompt_attention == "block"
    prompt = "Someone sits with the left leg crossed. Can you give the SMPL pose of this person?"
    model, manifest = result["model"].eval(), result["manifest"]
    family = make_family_for(model, result["processor"], manifest)
    template = Template.from_dict(manifest["template"])
    records = [PoseRecord(kind="text", pose_rotmat=np.zeros((24, 3, 3)))]

    def evaluated(attention):
        return predict_poses(model, result["tokenizer"], template, family, records, questions=[prompt],
                             prompt_attention=attention)[0]

    served = rt.chat("s", prompt).poses[0].rotmat
    np.testing.assert_allclose(served, evaluated("block"), atol=TOL)
    assert np.abs(served - evaluated("causal")).max() > 10 * TOL


def test_config_default_is_causal_and_unknown_values_are_refused():
    from training.config import ConfigError, load_config

    assert load_config(None, ["model.tiny_family=llava"]).model.prompt_attention == "causal"
    with pytest.raises(ConfigError, match="prompt_attention"):
        load_config(None, ["model.tiny_family=llava", "model.prompt_attention=bidirectional"])


def test_block_spans_follow_a_trimmed_history(bert, monkeypatch):
    """Turns dropped to fit the context shift the stored user spans with the ids."""
    from backend.posegpt.families import LlavaFamily

    monkeypatch.setattr(LlavaFamily, "max_positions", property(lambda self: 160))
    rt = _runtime(bert, "block")
    prompts = [f"turn {k}: a person jumping in the air with arms spread wide" for k in range(3)]
    for prompt in prompts:
        result = rt.chat("s", prompt)
    assert result.history_trimmed
    assert _span_texts(rt, "s") == prompts[-len(rt.store.get("s").user_spans):]
    np.testing.assert_allclose(result.poses[0].rotmat, _full_poses(rt, "s", [])[-1], atol=TOL)
