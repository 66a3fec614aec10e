"""Records the ids transformers 4.31's slow Llama tokenizer gives the fixture conversations, for every
tokenizer variant of tests/published_layout.py, into published_ids_431.json. The authors' code ran on
transformers 4.31; the project runs on transformers 5, which has no slow Llama tokenizer, so these ids are
what tests/test_published_parity.py checks the project's prompt ids against.

    python3.11 -m venv /tmp/ref431 && /tmp/ref431/bin/pip install torch==2.13.0 transformers==4.31.0 \\
        sentencepiece protobuf safetensors "numpy<2"
    /tmp/ref431/bin/python tests/data/record_published_ids.py
"""
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import published_layout as layout  # noqa: E402
from transformers import AutoTokenizer  # noqa: E402

out = {}
for legacy in (True, False):
    for wrap in (True, False):
        with tempfile.TemporaryDirectory() as tmp:
            layout.write_tokenizer(Path(tmp), legacy=legacy, im_start_end=wrap)
            tok = AutoTokenizer.from_pretrained(tmp, use_fast=False)
            chunks, decoded = {}, {}
            for name, (questions, image) in layout.CONVERSATIONS.items():
                first = layout.reference_prompt(questions, [], image)
                full = tok(first + " " + layout.ANSWER).input_ids
                answer = full[len(tok(first).input_ids):] + [tok.eos_token_id]
                # main_chat.py: decode, strip, drop "</s>"; then its "[POSE]" rewrite for the history
                text = tok.decode(answer, skip_special_tokens=False).strip().replace("</s>", "")
                decoded[name] = {"answer_ids": answer, "text": text}
                pose_text = text.replace("[SEG] ", "[POSE]").replace("[SEG]", "[POSE]")
                for history in (text, pose_text, layout.DIRECT_HISTORY):
                    follow_up = layout.reference_prompt(questions, [history], image)
                    direct = " " + layout.ANSWER[:-1]  # a direct answer, up to [SEG]
                    for prompt in (first, first + direct, follow_up, follow_up + direct):
                        for chunk in prompt.split("<image>"):
                            chunks[chunk] = tok(chunk).input_ids
            out[f"legacy{int(legacy)}_wrap{int(wrap)}"] = {"chunks": chunks, "decoded": decoded}
(Path(__file__).parent / "published_ids_431.json").write_text(json.dumps(out, indent=0, sort_keys=True) + "\n")
print("wrote", len(out), "variants")
