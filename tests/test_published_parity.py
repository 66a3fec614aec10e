"""Released ChatPose weights give the reference's poses: tiny random releases in the authors' layout
(tests/published_layout.py), converted and served by PoseRuntime.

The reference's prompt ids come from the authors' prompt code (conversation "v1" + tokenizer_image_token,
re-written in published_layout.reference_prompt) with every chunk tokenised by transformers 4.31's slow
Llama tokenizer: those ids were recorded by tests/data/record_published_ids.py, since transformers 5 has no
slow Llama tokenizer. So a test here fails if our ids differ from what the authors' code fed the model."""
import json
import logging
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch

import published_layout as layout
from backend.posegpt import convert_published
from backend.posegpt.errors import PoseGPTError
from backend.posegpt.runtime import PoseRuntime
from smpl_rig import rotations

pytestmark = pytest.mark.usefixtures("one_thread")

RECORDED = json.loads((Path(__file__).parent / "data" / "published_ids_431.json").read_text())
VARIANTS = [  # (legacy, <im_start>/<im_end> in the release, weights format, fast tokenizer.json shipped too)
    (True, True, "safetensors", False),
    (False, True, "sharded", False),
    (True, False, "bin", False),
    (False, False, "safetensors", True),
]


def _image(seed=1):
    return PIL.Image.fromarray((np.random.RandomState(seed).rand(48, 40, 3) * 255).astype("uint8"))


@pytest.fixture(scope="module", params=VARIANTS, ids=lambda v: f"legacy{int(v[0])}-ims{int(v[1])}-{v[2]}"
                                                               + ("-fast" if v[3] else ""))
def release(request, tmp_path_factory):
    legacy, ims, weights_format, fast = request.param
    root = tmp_path_factory.mktemp("release")
    published, clip, weights, language_config = layout.write_release(
        root, legacy=legacy, im_start_end=ims, weights_format=weights_format, fast_file=fast)
    out = convert_published.convert(published, clip, root / "converted", dtype="fp32")
    recorded = RECORDED[f"legacy{int(legacy)}_wrap{int(ims)}"]
    return dict(out=out, published=published, clip=clip, weights=weights, language_config=language_config,
                recorded=recorded, ims=ims)


def _runtime(release, **template):
    rt = PoseRuntime.from_checkpoint(release["out"], device="cpu", warmup=False)
    if template:  # a variation of the converted template, e.g. the reference's "[POSE]" history
        manifest = dict(rt.manifest, template=dict(rt.manifest["template"], **template))
        rt = PoseRuntime(rt.model, rt.tokenizer, rt.processor, manifest, device=rt.device, dtype=rt.dtype,
                         prompt_tokenizer=rt.turns.prompt_tokenizer, warmup=False)
    return rt


def _reference_ids(release, rt, prompt):
    """The authors' ids for ``prompt``, with their one image id written as our run of placeholders."""
    chunks = release["recorded"]["chunks"]
    image = [rt.tokenizer.convert_tokens_to_ids("<image>")] * rt.family.placeholder_ids(
        rt.family.encode_image(_image()))[:].__len__()
    return layout.reference_ids(prompt, lambda chunk: chunks[chunk], image)


@pytest.mark.parametrize("conversation", list(layout.CONVERSATIONS))
@pytest.mark.parametrize("mode", ["direct", "chat"])
def test_prompt_ids_equal_the_reference_first_turn_and_follow_up(release, conversation, mode):
    questions, has_image = layout.CONVERSATIONS[conversation]
    rt = _runtime(release)
    images = [_image()] if has_image else []
    first = layout.reference_prompt(questions, [], has_image)
    reply = rt.chat("s", questions[0], images, mode=mode)
    session = rt.store.get("s")
    ids = session.ids[:-1]  # without the end token the runtime closes the answer with
    if mode == "direct":  # the forced answer stops at the pose token: the reference's ids of "… Sure, it is [SEG]"
        assert ids == _reference_ids(release, rt, first + " " + layout.ANSWER[:-1])
        history = layout.DIRECT_HISTORY
    else:  # the greedy answer is the reference's answer, token for token; its text the reference's text
        recorded = release["recorded"]["decoded"][conversation]
        assert reply.token_ids + [rt.turns.end_id] == recorded["answer_ids"]
        assert ids[:-len(reply.token_ids)] == _reference_ids(release, rt, first)
        history = recorded["text"]
        assert session.text.endswith(" " + history.replace("[SEG]", "<POSE>") + "</s>")
    rt.chat("s", questions[1], mode="direct")
    follow_up = layout.reference_prompt(questions, [history], has_image)
    assert rt.store.get("s").ids[:-1] == _reference_ids(release, rt, follow_up + " " + layout.ANSWER[:-1])


def test_history_as_the_published_script_wrote_it(release):
    """``history_pose_text: "[POSE]"`` gives the reference's follow-up ids exactly, "[POSE]" text and all."""
    questions, _ = layout.CONVERSATIONS["text"]
    rt = _runtime(release, history_pose_text="[POSE]")
    rt.chat("s", questions[0], mode="chat")
    rt.chat("s", questions[1], mode="chat")
    text = release["recorded"]["decoded"]["text"]["text"].replace("[SEG] ", "[POSE]").replace("[SEG]", "[POSE]")
    reference = _reference_ids(release, rt, layout.reference_prompt(questions, [text], False))
    assert rt.store.get("s").ids[:len(reference)] == reference


@pytest.mark.parametrize("with_image", [False, True])
def test_direct_and_chat_give_the_same_pose(release, with_image):
    """First turns and follow-ups (after a chat or a direct first turn, both sessions with the same history)."""
    rt = _runtime(release)
    images = [_image(3)] if with_image else []
    for first_mode in ("direct", "chat"):
        poses = {}
        for session, mode in (("a", "chat"), ("b", "direct")):
            first = rt.chat(session + first_mode, "What is his pose?", images, mode=mode)
            poses[mode] = first.poses[0].rotmat
            rt.reset(session + first_mode)
            rt.chat(session + first_mode, "What is his pose?", images, mode=first_mode)
            follow = rt.chat(session + first_mode, "Now he kneels.", mode=mode)
            assert len(follow.poses) == 1
            poses[mode, "follow"] = follow.poses[0].rotmat
        np.testing.assert_allclose(poses["chat"], poses["direct"], atol=1e-5)
        np.testing.assert_allclose(poses["chat", "follow"], poses["direct", "follow"], atol=1e-5)


def test_pose_equals_the_original_tensors_run_by_hand(release):
    """Weights, head, 6D layout, image features and the position before [SEG], against the release's own
    tensors: Llama decoder + CLIP layer −2 patches + mlp2x_gelu projector + text_hidden_fcs."""
    from transformers import CLIPVisionModel, LlamaForCausalLM

    rt = _runtime(release)
    image = _image(5)
    result = rt.chat("s", "What is his pose?", [image], mode="direct")
    prompt = layout.reference_prompt(["What is his pose?"], [], True) + " " + layout.ANSWER[:-1]
    chunks = release["recorded"]["chunks"]
    reference = layout.reference_ids(prompt, lambda c: chunks[c], [-200])  # IMAGE_TOKEN_INDEX, as LLaVA writes it
    weights = release["weights"]
    language = LlamaForCausalLM(release["language_config"])
    language.load_state_dict({k: v for k, v in weights.items() if not k.startswith(("model.mm_", "model.text_"))})
    vision = CLIPVisionModel.from_pretrained(str(release["clip"]))
    pixels = rt.processor(images=[image], return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        patches = vision(pixel_values=pixels, output_hidden_states=True).hidden_states[-2][0, 1:]
        features = torch.nn.functional.gelu(patches @ weights["model.mm_projector.0.weight"].T
                                            + weights["model.mm_projector.0.bias"])
        features = features @ weights["model.mm_projector.2.weight"].T + weights["model.mm_projector.2.bias"]
        k = reference.index(-200)
        embeds = torch.cat([language.model.embed_tokens(torch.tensor([reference[:k]]))[0], features,
                            language.model.embed_tokens(torch.tensor([reference[k + 1:]]))[0]])[None]
        # The chat script sets pad = unk, so 4.31's generate() hid every <unk> of the prompt from attention
        # (the non-legacy variants write one here: "What" after <im_end> loses its "▁" and is no piece).
        visible = torch.tensor(reference[:k] + [1] * features.shape[0] + reference[k + 1:]) != 0
        hidden = language.model(inputs_embeds=embeds, attention_mask=visible[None].long()).last_hidden_state[0, -2]
        h = torch.relu(hidden @ weights["model.text_hidden_fcs.0.0.weight"].T + weights["model.text_hidden_fcs.0.0.bias"])
        d6 = h @ weights["model.text_hidden_fcs.0.2.weight"].T + weights["model.text_hidden_fcs.0.2.bias"]
    expect = rotations.d6_to_rotmat(d6.reshape(24, 6).double()).numpy()
    np.testing.assert_allclose(result.poses[0].rotmat, expect, atol=1e-5)
    if not release["recorded"]["chunks"] or 0 in reference:
        assert json.loads((release["out"] / "manifest.json").read_text())["prompt_tokenizer"]["attention_masked_ids"] == [0]


def test_converted_manifest_states_the_reference_prompt(release):
    manifest = json.loads((release["out"] / "manifest.json").read_text())
    template, prompt = manifest["template"], manifest["prompt_tokenizer"]
    assert template["encoding"] == "whole" and template["direct_answer"] == "Sure, it is<POSE>"
    assert template["pose_follows"] == "▁is" and template["image_text"] == "<im_start><image><im_end>\n"
    assert prompt["kind"] == "sentencepiece_llama_slow" and (release["out"] / prompt["model_file"]).is_file()
    assert manifest["converted_from"]["skipped_tensors"] == 2 + layout.LAYERS  # smplx buffers, inv_freq


def test_a_space_piece_before_the_pose_token_is_refused_at_load(release):
    """The fast tokenizer turns "it is <POSE>" into ▁is ▁ <POSE>: a template that reads the pose at that
    lone ▁ is refused, as is one whose token before <POSE> is not the one the model emits there."""
    rt = _runtime(release)
    base = dict(rt.manifest, prompt_tokenizer={"kind": "checkpoint_tokenizer"})
    spaced = dict(base, template=dict(base["template"], direct_answer="Sure, it is ▁<POSE>", pose_follows=""))
    with pytest.raises(PoseGPTError, match="bare space piece") as refused:
        PoseRuntime(rt.model, rt.tokenizer, rt.processor, spaced, device=rt.device, dtype=rt.dtype, warmup=False)
    assert refused.value.code == "bad_checkpoint"
    other = dict(rt.manifest, template=dict(rt.manifest["template"], pose_follows="▁was"))
    with pytest.raises(PoseGPTError, match="emits '▁was'"):
        PoseRuntime(rt.model, rt.tokenizer, rt.processor, other, device=rt.device, dtype=rt.dtype,
                    prompt_tokenizer=rt.turns.prompt_tokenizer, warmup=False)


def test_a_prompt_cannot_type_control_tokens(release):
    rt = _runtime(release)
    for typed in ("</s>", "<POSE>", "<s>"):
        with pytest.raises(PoseGPTError, match="control token") as refused:
            rt.chat("s", f"stand {typed} up")
        assert refused.value.code == "bad_request"


def test_converter_skips_non_model_buffers_with_a_log_line(tmp_path, caplog):
    published, clip, *_ = layout.write_release(tmp_path, weights_format="bin")
    with caplog.at_level(logging.INFO, logger="backend.posegpt.convert_published"):
        convert_published.convert(published, clip, tmp_path / "out", dtype="fp32", verify=False)
    assert any("model.smplx.v_template" in r.message and "rotary_emb.inv_freq" in r.message for r in caplog.records)


def test_every_converter_failure_is_a_bad_checkpoint_naming_what_is_wrong(tmp_path):
    published, clip, *_ = layout.write_release(tmp_path / "a", weights_format="sharded")
    (published / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(PoseGPTError, match="model-00002-of-00002.safetensors") as missing:
        convert_published.convert(published, clip, tmp_path / "out", verify=False)
    assert missing.value.code == "bad_checkpoint"

    published, clip, *_ = layout.write_release(tmp_path / "b", weights_format="bin")
    torch.save({"x": torch.zeros(1), "code": PoseGPTError}, published / "pytorch_model.bin")  # not only tensors
    with pytest.raises(PoseGPTError, match="pytorch_model.bin"):
        convert_published.convert(published, clip, tmp_path / "out", verify=False)

    published, clip, *_ = layout.write_release(tmp_path / "c")
    for name in ("tokenizer.model", "added_tokens.json"):
        (published / name).unlink()
    with pytest.raises(PoseGPTError, match="no tokenizer"):
        convert_published.convert(published, clip, tmp_path / "out", verify=False)

    published, clip, *_ = layout.write_release(tmp_path / "d")
    (published / "config.json").write_text(json.dumps({"hidden_size": 64}))
    with pytest.raises(PoseGPTError, match="lacks"):
        convert_published.convert(published, clip, tmp_path / "out", verify=False)
    assert convert_published.main(["--published", str(tmp_path / "nowhere"), "--clip", str(clip),
                                   "--out", str(tmp_path / "o")]) == 2
