"""Label masking, image-token expansion, batching and the loss terms of training, on tiny offline models."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from PIL import Image

from backend.posegpt.families import make_family
from backend.posegpt.model import unwrap_backbone
from backend.posegpt.templates import Template
from backend.posegpt.tiny import build_tiny_model
from smpl_rig.rotations import rotmat_x
from training.collate import IGNORE, ChatEncoder, collate
from training.data.records import InstructionRecord, PoseRecord
from training.train import forward_batch


def _setup(family_name: str):
    model, tokenizer, processor, manifest = build_tiny_model(family_name, seed=0)
    base = unwrap_backbone(model.backbone)
    family = make_family(family_name, base.config, processor, base.model)
    template = Template.from_dict(manifest["template"])
    return model, tokenizer, family, template, ChatEncoder(tokenizer, template, family, model.pose_token_id, 2048)


def _spans(labels):
    """Contiguous runs of labelled positions as (start, end)."""
    spans, start = [], None
    for i, lab in enumerate(list(labels) + [IGNORE]):
        if lab != IGNORE and start is None:
            start = i
        elif lab == IGNORE and start is not None:
            spans.append((start, i))
            start = None
    return spans


def _image():
    return Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 56, 3), dtype=np.uint8))


@pytest.mark.parametrize("family_name", ["llava", "qwen2_vl"])
def test_only_assistant_tokens_carry_loss_and_images_expand(family_name):
    model, tokenizer, family, template, encoder = _setup(family_name)
    record = InstructionRecord(turns=[("user", "<image>\nWhat is shown?"), ("assistant", "A person waving."),
                                      ("user", "Which hand?"), ("assistant", "The left hand.")],
                               load_image=_image)
    sample = encoder.encode(record, random.Random(0))
    ids, labels = sample.input_ids, sample.labels
    assert len(ids) == len(labels)
    # Labels are the ids themselves where set (the model shifts them), nothing else.
    assert all(lab == tok for tok, lab in zip(ids, labels) if lab != IGNORE)
    spans = _spans(labels)
    end = template.end_token + template.after_end       # the end of a turn is learned too
    assert [tokenizer.decode(ids[a:b]) for a, b in spans] == [
        template.answer_prefix + "A person waving." + end, template.answer_prefix + "The left hand." + end]
    # Everything else (system, USER/ASSISTANT markers, questions, image placeholders) is masked.
    masked_text = tokenizer.decode([t for t, lab in zip(ids, labels) if lab == IGNORE and t != family.image_token_id])
    assert "What is shown?" in masked_text and "Which hand?" in masked_text
    image_positions = [i for i, t in enumerate(ids) if t == family.image_token_id]
    assert len(image_positions) == sample.images[0].num_tokens > 1
    assert all(labels[i] == IGNORE for i in image_positions)
    assert image_positions == list(range(image_positions[0], image_positions[-1] + 1))   # one block
    assert sample.positions.shape == ((3 if family_name == "qwen2_vl" else 1), len(ids))


def test_pose_sample_labels_its_answer_with_the_pose_token():
    model, tokenizer, family, template, encoder = _setup("llava")
    record = PoseRecord(kind="text", pose_rotmat=np.broadcast_to(np.eye(3), (24, 3, 3)).copy(), caption="arms up")
    sample = encoder.encode(record, random.Random(1))
    (start, stop), = _spans(sample.labels)
    answer = sample.input_ids[start:stop]
    assert answer.count(model.pose_token_id) == 1 and sample.input_ids.count(model.pose_token_id) == 1
    assert tokenizer.decode(answer).endswith(template.end_token)


def test_cross_entropy_is_over_assistant_tokens_only_and_batches_pad_cleanly():
    model, tokenizer, family, template, encoder = _setup("llava")
    rng = random.Random(2)
    eye = np.broadcast_to(np.eye(3), (24, 3, 3)).copy()
    records = [InstructionRecord(turns=[("user", "Say hi"), ("assistant", "Hi there!")]),
               PoseRecord(kind="text", pose_rotmat=eye, caption="The person sits on the floor."),
               PoseRecord(kind="image", pose_rotmat=eye, load_image=_image)]
    samples = [encoder.encode(r, rng) for r in records]
    batch = collate(samples, tokenizer.pad_token_id, family)
    lengths = [len(s.input_ids) for s in samples]
    for b, n in enumerate(lengths):
        assert batch["attention_mask"][b, :n].all() and not batch["attention_mask"][b, n:].any()
        assert (batch["labels"][b, n:] == IGNORE).all()
    assert batch["pose_sample_index"].tolist() == [1, 2] and batch["pose_targets"].shape == (2, 24, 3, 3)

    model.eval()
    with torch.no_grad():
        trained = forward_batch(model, batch, family, torch.device("cpu"), torch.float32)
        kwargs = family.image_kwargs(batch["images"], "cpu", torch.float32)
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], **kwargs)
    # The loss PoseGPT.forward returns is what training used to add up itself: 1.0 × CE over the assistant
    # tokens + 0.1 × (mean |ΔR| over the 23 body joints + mean |ΔR| over the root), computed here by hand.
    logp = torch.log_softmax(out.logits.float(), -1)
    terms = [-logp[b, t - 1, batch["input_ids"][b, t]] for b in range(3) for t in range(1, max(lengths))
             if batch["labels"][b, t] != IGNORE]
    ce = torch.stack(terms).mean()
    diff = (out.pose_rotmat.double() - batch["pose_targets"].double()).abs()
    pose = diff[:, 1:].sum() / (len(diff) * 23 * 9) + diff[:, 0].sum() / (len(diff) * 9)
    torch.testing.assert_close(trained.ce_loss, ce, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(trained.pose_loss.double(), pose, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(trained.loss.double(), 1.0 * ce.double() + 0.1 * pose, rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        weighted = forward_batch(model, batch, family, torch.device("cpu"), torch.float32, ce_weight=0.5, pose_weight=2.0)
        no_targets = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                           labels=batch["labels"], **kwargs)
    torch.testing.assert_close(weighted.loss.double(), 0.5 * ce.double() + 2.0 * pose, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(no_targets.loss, trained.ce_loss, rtol=1e-5, atol=1e-6)   # labels only: CE alone
    with pytest.raises(ValueError, match="pose targets"):
        model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"],
              pose_targets=batch["pose_targets"][:1], **kwargs)


def test_pose_loss_weighs_the_root_like_all_body_joints():
    from backend.posegpt.model import pose_l1_loss

    eye = torch.eye(3).expand(1, 24, 3, 3).clone()
    flipped_root = eye.clone()
    flipped_root[0, 0] = torch.as_tensor(rotmat_x(np.pi), dtype=torch.float32)   # two entries differ by 2
    torch.testing.assert_close(pose_l1_loss(eye, flipped_root), torch.tensor(4 / 9))
    flipped_knee = eye.clone()
    flipped_knee[0, 4] = flipped_root[0, 0]
    torch.testing.assert_close(pose_l1_loss(eye, flipped_knee), torch.tensor(4 / (23 * 9)))
    with pytest.raises(ValueError, match="24, 3, 3"):
        pose_l1_loss(eye[:, :23], eye[:, :23])


def test_encoder_rejects_mismatched_images_and_stray_pose_tokens():
    model, tokenizer, family, template, encoder = _setup("llava")
    with pytest.raises(ValueError, match="image"):
        encoder.encode(InstructionRecord(turns=[("user", "<image>\nhi"), ("assistant", "ok")]), random.Random(0))
    # A literal <POSE> in instruction text must not become a pose without a target.
    sample = encoder.encode(InstructionRecord(turns=[("user", "write <POSE>"), ("assistant", "<POSE> here")]),
                            random.Random(0))
    assert model.pose_token_id not in sample.input_ids


def test_follow_up_chat_trains_every_turns_pose_in_order():
    # A text record asked as turn 3 of a chat: each earlier answer keeps its real <POSE> and its own target,
    # so the loss pairs every pose token with the pose its turn described, and the last turn is the record.
    from training.sources import MixedSamples

    model, tokenizer, family, template, encoder = _setup("llava")
    poses = [np.broadcast_to(rotmat_x(a), (24, 3, 3)).copy() for a in (0.1, 0.5, 0.9)]
    first, second, last = [PoseRecord(kind="text", pose_rotmat=p, caption=c) for p, c in
                           zip(poses, ["She stands.", "He kneels on one knee.", "She is sitting down."])]
    sample = encoder.encode(last, random.Random(3), [first, second])
    assert sample.input_ids.count(model.pose_token_id) == 3 and len(_spans(sample.labels)) == 3
    text = tokenizer.decode(sample.input_ids)
    assert text.index("She stands.") < text.index("He kneels") < text.index("sitting down") < text.rindex("<POSE>")
    plain = encoder.encode(first, random.Random(3))
    batch = collate([plain, sample], tokenizer.pad_token_id, family)
    assert batch["pose_sample_index"].tolist() == [0, 1, 1, 1]
    np.testing.assert_allclose(batch["pose_targets"].numpy(), np.stack([poses[0], *poses]), atol=1e-6)
    model.eval()
    with torch.no_grad():
        forward_batch(model, batch, family, torch.device("cpu"), torch.float32)  # pose tokens match targets
    with pytest.raises(ValueError, match="follow-up"):
        encoder.encode(PoseRecord(kind="image", pose_rotmat=poses[0], load_image=_image), random.Random(0), [first])

    # In training, every n-th batch is made of follow-ups, the others stay single-turn.
    dataset = MixedSamples({"text": [first, second, last]}, encoder, seed=0, follow_up_every=3)
    counts = [dataset[("text", 2, batch_no, 0)].input_ids.count(model.pose_token_id) for batch_no in range(6)]
    assert counts[0] == counts[1] == counts[3] == counts[4] == 1 and counts[2] >= 2 and counts[5] >= 2


def test_edit_chat_trains_the_original_then_the_edited_pose():
    # Every edit_every-th batch a text sample becomes caption → <POSE> (its pose), then an edit instruction
    # → <POSE> (the edited pose, only the edited joints differ); the same key always builds the same chat.
    from training.corpus.edits import EDIT_KINDS, edit_pose, edited_target, target_to_rotvec, text_target_rotmat
    from training.corpus.generator import PoseGenerator
    from training.sources import MixedSamples

    model, tokenizer, family, template, encoder = _setup("llava")
    pose = PoseGenerator([0, 5, 0]).sample()
    record = PoseRecord(kind="text", pose_rotmat=text_target_rotmat(pose.rotvec), caption="She is standing.",
                        meta={"source": "corpus"})
    dataset = MixedSamples({"text": [record]}, encoder, seed=0, edit_every=2)
    plain = dataset[("text", 0, 0, 0)]
    assert plain.input_ids.count(model.pose_token_id) == 1 and not plain.earlier_poses
    edited = [dataset[("text", 0, b, 0)] for b in (1, 3, 5, 7)]
    assert all(s.input_ids.count(model.pose_token_id) == 2 and len(_spans(s.labels)) == 2 for s in edited)
    again = dataset[("text", 0, 1, 0)]
    assert again.input_ids == edited[0].input_ids and np.array_equal(again.pose_rotmat, edited[0].pose_rotmat)

    sample = edited[0]
    # The same draws by hand: the instruction in turn 2, the targets in order original → edited.
    rng = random.Random("0:1:0")
    edit = next(e for e in (edit_pose(target_to_rotvec(record.pose_rotmat), rng) for _ in range(4)) if e)
    assert edit.kind in EDIT_KINDS
    text = tokenizer.decode(sample.input_ids)
    assert text.index("She is standing.") < text.index("<POSE>") < text.index(edit.instruction) < text.rindex("<POSE>")
    np.testing.assert_array_equal(sample.pose_rotmat, edited_target(record.pose_rotmat, edit))
    batch = collate([plain, sample], tokenizer.pad_token_id, family)
    assert batch["pose_sample_index"].tolist() == [0, 1, 1]
    targets = batch["pose_targets"].numpy()
    np.testing.assert_array_equal(targets[1], record.pose_rotmat)
    np.testing.assert_array_equal(targets[2], sample.pose_rotmat)
    same = [j for j in range(24) if j not in edit.changed]
    assert np.array_equal(targets[2][same], targets[1][same]) and not np.allclose(targets[2], targets[1])
    # The edit turn's changed joints are marked, and only they: the edit term weighs them on their own.
    focus = batch["pose_focus"].numpy()
    assert not focus[:2].any() and sorted(np.flatnonzero(focus[2])) == sorted(edit.changed)
    model.eval()
    with torch.no_grad():
        plain_out = forward_batch(model, batch, family, torch.device("cpu"), torch.float32, pose_weight=0.5)
        weighted = forward_batch(model, batch, family, torch.device("cpu"), torch.float32, pose_weight=0.5,
                                 edit_weight=2.0)
    by_hand = (weighted.pose_rotmat[2] - batch["pose_targets"][2]).abs()[list(edit.changed)].mean()
    torch.testing.assert_close(weighted.edit_focus_loss, by_hand)
    torch.testing.assert_close(weighted.loss, plain_out.loss + 0.5 * 2.0 * by_hand)
