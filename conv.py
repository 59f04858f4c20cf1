import torch, os
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, AutoTokenizer
d = os.path.expanduser("~/.cache/doppel/smollm2"); f = "SmolLM2-135M-Instruct.Q4_1.gguf"
out = "/tmp/mrg/smol-hf"; os.makedirs(out, exist_ok=True)
tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
m = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.bfloat16)
sd = {k: v.contiguous() for k, v in m.state_dict().items() if k != "lm_head.weight"}
save_file(sd, f"{out}/model.safetensors", metadata={"format": "pt"})
m.config.save_pretrained(out); m.generation_config.save_pretrained(out); tok.save_pretrained(out)
print("ok", m.config.tie_word_embeddings)
