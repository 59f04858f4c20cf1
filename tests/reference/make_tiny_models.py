#!/usr/bin/env python3
"""Tiny random Hugging Face models + the logits transformers computes for them.

Run by hand (CI has no torch):  pip install torch transformers tokenizers safetensors
                                python3 tests/reference/make_tiny_models.py
Writes tests/fixtures/tiny-{qwen2,llama,qwen3}/ (each well under 1 MB), every one a complete
HF model directory that doppel, transformers and PEFT all load:

  config.json             architecture (see MODELS below); fp32
  generation_config.json  sampling defaults + eos ids, like a real model ships
  model.safetensors       fp32 weights, random (seeded): weights ~ N(0, 0.1), norm weights
                          ~ 1 + N(0, 0.2) and biases ~ N(0, 0.1) so every term is exercised
  tokenizer.json          a byte-level BPE (ByteLevel pre-tokenizer, 256 byte tokens, a few
  tokenizer_config.json   merges learnt from a fixed English text, ChatML specials
  special_tokens_map.json <|endoftext|>=0 <|im_start|>=1 <|im_end|>=2) with FEWER tokens than
                          the model's vocab_size, so the rows beyond it must never be sampled
  reference.safetensors   the expected outputs, computed by transformers in fp64 from the fp32
                          weights (then rounded to fp32):
      seq{i}.tokens  I32 (T)      fixed token sequences (lengths 1, 7, 24, 40 for i=0..3)
      seq{i}.logits  F32 (T, V)   logits at every position of a plain forward pass
      decode.prefix  I32 (P)      a prompt fed as one prefill ...
      decode.tokens  I32 (S)      ... then S tokens fed one at a time through the KV cache
      decode.logits  F32 (S+1, V) logits after the prefill (last position), then after each
                                  decoded token (transformers' own past_key_values path)
      nf4.seq{i}.logits F32 (T,V) the same sequences through the model whose block linear
                                  weights were replaced by dequantize(quantize_nf4(W)),
                                  NF4 + double quantization, blocksize 64, computed HERE in
                                  numpy from REFERENCE.md section 3 (bitsandbytes' algorithm:
                                  midpoint thresholds, dynamic signed 8-bit map for absmax
                                  - mean(absmax), groups of 256), independent of doppel's C code.
                                  When bitsandbytes is installed (it was for the committed files:
                                  reference.safetensors metadata nf4_weights) its own CPU
                                  quantize_4bit/dequantize_4bit is used instead: the two agree
                                  except for a rare absmax code (bitsandbytes' CPU search picks
                                  the neighbour of the nearest 8-bit code), which the script
                                  counts and prints
      nf4.<linear>    F32         the dequantized weights themselves, for one layer (q_proj and
                                  down_proj of layer 0), to localise a mismatch

The three models:
  tiny-qwen2  Qwen2ForCausalLM: q/k/v biases, tied embeddings, GQA 4 heads / 2 kv heads
  tiny-llama  LlamaForCausalLM: llama3 rope_scaling chosen so all three frequency bands
              (kept, scaled, smoothed) occur; untied lm_head; GQA 4/2
  tiny-qwen3  Qwen3ForCausalLM: explicit head_dim (32 != hidden/heads), q_norm/k_norm,
              untied lm_head, GQA 4/2

Also used by the train helper (LoRA forward/backward against PEFT) and the CUDA/EMU tests.
"""
import json
import os
import sys

import numpy as np
import torch
from safetensors.torch import save_file

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures")
VOCAB = 320  # model rows; the tokenizer has fewer (TOKENIZER_VOCAB)
TOKENIZER_VOCAB = 300

COMMON = dict(
    vocab_size=VOCAB,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
    rms_norm_eps=1e-6,
    bos_token_id=None,
    eos_token_id=2,
    torch_dtype="float32",
    attention_dropout=0.0,
)

MODELS = {
    "tiny-qwen2": dict(
        cls="Qwen2",
        cfg=dict(COMMON, model_type="qwen2", architectures=["Qwen2ForCausalLM"], rope_theta=10000.0,
                 tie_word_embeddings=True, use_sliding_window=False, sliding_window=None,
                 max_window_layers=2),
        seed=1,
    ),
    "tiny-llama": dict(
        cls="Llama",
        cfg=dict(COMMON, model_type="llama", architectures=["LlamaForCausalLM"], rope_theta=10000.0,
                 tie_word_embeddings=False, attention_bias=False, mlp_bias=False,
                 rms_norm_eps=1e-5, head_dim=16,
                 # original_max_position_embeddings 64 with head_dim 16 and theta 1e4: the
                 # wavelengths 2*pi*theta^(2i/16) span 6.3 .. 19870, across both cut-offs
                 # (64/4 = 16 and 64/1 = 64), so the three llama3 cases all occur
                 rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0,
                                   high_freq_factor=4.0, original_max_position_embeddings=64)),
        seed=2,
    ),
    "tiny-qwen3": dict(
        cls="Qwen3",
        cfg=dict(COMMON, model_type="qwen3", architectures=["Qwen3ForCausalLM"], rope_theta=1000000.0,
                 tie_word_embeddings=False, head_dim=32, attention_bias=False,
                 use_sliding_window=False, sliding_window=None, max_window_layers=2),
        seed=3,
    ),
}

SEQ_LENGTHS = [1, 7, 24, 40]
DECODE_PREFIX, DECODE_STEPS = 9, 6

# ---------------------------------------------------------------- NF4 (REFERENCE.md section 3)
NF4 = np.array([-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
                -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
                0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
                0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0], dtype=np.float32)


def dynamic_map_signed():
    """bitsandbytes create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8)."""
    data = []
    max_exponent_bits, total_bits = 7, 8
    non_sign_bits = total_bits - 1
    additional_items = 2 ** (non_sign_bits - max_exponent_bits) - 1
    for i in range(max_exponent_bits):
        fraction_items = int(2 ** (i + non_sign_bits - max_exponent_bits) + 1)
        boundaries = torch.linspace(0.1, 1, fraction_items, dtype=torch.float32)
        means = (boundaries[:-1] + boundaries[1:]) / 2.0
        data += ((10 ** (-(max_exponent_bits - 1) + i)) * means).tolist()
        data += (-(10 ** (-(max_exponent_bits - 1) + i)) * means).tolist()
    if additional_items > 0:
        boundaries = torch.linspace(0.1, 1, additional_items + 1, dtype=torch.float32)
        means = (boundaries[:-1] + boundaries[1:]) / 2.0
        data += ((10 ** (-(max_exponent_bits - 1) + i)) * means).tolist()
        data += (-(10 ** (-(max_exponent_bits - 1) + i)) * means).tolist()
    data.append(0)
    data.append(1.0)
    assert len(data) == 2 ** total_bits
    gap = 256 - len(data)
    for _ in range(gap):
        data.append(0)
    data.sort()
    return np.array(data, dtype=np.float32)


def nearest_code(x, table):
    """Index of the nearest table value (ties to the lower index, like a midpoint tree with >)."""
    mids = (table[1:] + table[:-1]) / 2
    return np.searchsorted(mids, x, side="left").astype(np.int64)


def nf4_dequant_roundtrip(w, blocksize=64):
    flat = w.astype(np.float32).reshape(-1)
    assert flat.size % blocksize == 0
    blocks = flat.reshape(-1, blocksize)
    absmax = np.abs(blocks).max(axis=1).astype(np.float32)
    safe = np.where(absmax == 0, 1, absmax).astype(np.float32)
    codes = nearest_code((blocks / safe[:, None]).astype(np.float32), NF4)
    # double quantization of absmax: offset = mean, groups of 256, signed dynamic map
    # bitsandbytes takes torch's fp32 mean; numpy's fp32 sum order can differ by one ulp
    offset = np.float32(torch.from_numpy(absmax).mean().item())
    centered = (absmax - offset).astype(np.float32)
    dmap = dynamic_map_signed()
    nb = centered.size
    groups = (nb + 255) // 256
    out_absmax = np.empty_like(centered)
    for g in range(groups):
        part = centered[g * 256:(g + 1) * 256]
        a2 = np.float32(np.abs(part).max())
        a2s = a2 if a2 != 0 else np.float32(1)
        q = nearest_code((part / a2s).astype(np.float32), dmap)
        out_absmax[g * 256:(g + 1) * 256] = dmap[q] * a2 + offset
    deq = NF4[codes] * out_absmax[:, None]
    return deq.reshape(w.shape).astype(np.float32)


def bnb_roundtrip(w):
    """bitsandbytes' own quantize_4bit(nf4, blocksize 64, compress_statistics=True) +
    dequantize_4bit on the CPU, or None when bitsandbytes is not installed."""
    try:
        import bitsandbytes.functional as bf
    except ImportError:
        return None
    q, st = bf.quantize_4bit(w.contiguous(), blocksize=64, compress_statistics=True, quant_type="nf4")
    return bf.dequantize_4bit(q, st).numpy()


# ---------------------------------------------------------------- tokenizer
TRAIN_TEXT = """hello there, how are you doing today? i am fine, thanks for asking.
what are you up to this weekend? we could go for a walk or watch a movie.
lol that is so funny. did you see the new game? it looks really good.
the quick brown fox jumps over the lazy dog. ok see you later, bye!
"""


def make_tokenizer(outdir):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(vocab_size=TOKENIZER_VOCAB, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator([TRAIN_TEXT] * 4, trainer=trainer)
    assert tok.token_to_id("<|im_end|>") == 2 and tok.get_vocab_size() <= TOKENIZER_VOCAB
    tok.save(os.path.join(outdir, "tokenizer.json"))
    template = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
                "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}"
                "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
    with open(os.path.join(outdir, "tokenizer_config.json"), "w") as f:
        json.dump(dict(tokenizer_class="PreTrainedTokenizerFast", bos_token=None,
                       eos_token="<|im_end|>", pad_token="<|endoftext|>",
                       unk_token=None, model_max_length=256, chat_template=template,
                       added_tokens_decoder={str(i): dict(content=s, special=True, lstrip=False,
                                                          rstrip=False, normalized=False,
                                                          single_word=False)
                                             for i, s in enumerate(specials)}), f, indent=2)
    with open(os.path.join(outdir, "special_tokens_map.json"), "w") as f:
        json.dump(dict(eos_token="<|im_end|>", pad_token="<|endoftext|>"), f, indent=2)
    return tok.get_vocab_size()


# ---------------------------------------------------------------- model + logits
def classic_config(outdir):
    """transformers 5 writes `rope_parameters`; real checkpoints (Llama 3.x, SmolLM2, Qwen2.5,
    Qwen3) carry top-level `rope_theta` and `rope_scaling`, the format doppel's loader reads:
    rewrite to that, and drop bos_token_id (ChatML models prepend nothing)."""
    path = os.path.join(outdir, "config.json")
    with open(path) as f:
        cfg = json.load(f)
    rp = cfg.pop("rope_parameters", None)
    if rp:
        cfg["rope_theta"] = rp.pop("rope_theta")
        if rp.get("rope_type", "default") != "default":
            cfg["rope_scaling"] = rp
    cfg.pop("bos_token_id", None)
    cfg.pop("pad_token_id", None)
    if "dtype" in cfg:
        cfg["torch_dtype"] = cfg.pop("dtype")
    with open(path, "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)


def build(name, spec):
    import transformers
    outdir = os.path.join(ROOT, name)
    os.makedirs(outdir, exist_ok=True)
    cfg_cls = getattr(transformers, spec["cls"] + "Config")
    model_cls = getattr(transformers, spec["cls"] + "ForCausalLM")
    cfg_dict = {k: v for k, v in spec["cfg"].items() if v is not None}
    config = cfg_cls(**cfg_dict)
    config.tie_word_embeddings = spec["cfg"]["tie_word_embeddings"]
    torch.manual_seed(spec["seed"])
    model = model_cls(config).to(torch.float32).eval()
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if "norm" in pname:
                p.copy_(1 + 0.2 * torch.randn_like(p))
            elif pname.endswith("bias"):
                p.copy_(0.1 * torch.randn_like(p))
            else:
                p.copy_(0.1 * torch.randn_like(p))
    if config.tie_word_embeddings:
        assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()

    model.save_pretrained(outdir, safe_serialization=True)
    classic_config(outdir)
    # the rewritten config must load into the same model (same logits) in transformers
    reloaded = model_cls.from_pretrained(outdir, torch_dtype=torch.float32).eval()
    probe = torch.arange(0, 50, dtype=torch.long)[None] % VOCAB
    with torch.no_grad():
        assert torch.equal(reloaded(probe).logits, model(probe).logits), "config rewrite changed the model"
    with open(os.path.join(outdir, "generation_config.json"), "w") as f:
        json.dump(dict(eos_token_id=[2, 0], temperature=0.7, top_p=0.9, top_k=40,
                       repetition_penalty=1.1, do_sample=True), f, indent=2)
    ntok = make_tokenizer(outdir)

    rng = np.random.default_rng(100 + spec["seed"])
    # sequences use ids the tokenizer has, plus a few rows beyond it (the model still has them)
    seqs = [rng.integers(0, VOCAB, size=t).astype(np.int32) for t in SEQ_LENGTHS]
    ref = {}
    m64 = model_cls(config).to(torch.float64).eval()
    m64.load_state_dict({k: v.to(torch.float64) for k, v in model.state_dict().items()})

    def logits_of(m, ids):
        with torch.no_grad():
            out = m(torch.tensor(ids, dtype=torch.long)[None], use_cache=False)
        return out.logits[0].to(torch.float32).numpy()

    for i, s in enumerate(seqs):
        ref[f"seq{i}.tokens"] = torch.from_numpy(s)
        ref[f"seq{i}.logits"] = torch.from_numpy(logits_of(m64, s))
        # sanity: fp32 transformers agrees with the fp64 reference we store
        d = np.abs(logits_of(model, s) - ref[f"seq{i}.logits"].numpy()).max()
        assert d < 1e-4, d

    prefix = rng.integers(0, ntok, size=DECODE_PREFIX).astype(np.int32)
    steps = rng.integers(0, ntok, size=DECODE_STEPS).astype(np.int32)
    with torch.no_grad():
        out = m64(torch.tensor(prefix, dtype=torch.long)[None], use_cache=True)
        dec = [out.logits[0, -1]]
        past = out.past_key_values
        for t in steps:
            out = m64(torch.tensor([[int(t)]], dtype=torch.long), past_key_values=past, use_cache=True)
            past = out.past_key_values
            dec.append(out.logits[0, -1])
    ref["decode.prefix"] = torch.from_numpy(prefix)
    ref["decode.tokens"] = torch.from_numpy(steps)
    ref["decode.logits"] = torch.stack(dec).to(torch.float32).contiguous()

    # NF4 path: block linears replaced by their NF4+DQ round trip (embeddings, norms, lm_head kept)
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    checked = []
    for k in list(sd):
        if ".layers." in k and k.endswith("proj.weight"):
            deq = nf4_dequant_roundtrip(sd[k].numpy())
            bnb = bnb_roundtrip(sd[k])
            if bnb is not None:
                # bitsandbytes' CPU 8-bit search for the absmax codes occasionally picks the
                # neighbour of the nearest code; where it does, its weights are the reference
                diff_blocks = int((np.abs(bnb - deq).reshape(-1, 64).max(axis=1) > 0).sum())
                checked.append((k, diff_blocks))
                deq = bnb
            sd[k] = torch.from_numpy(deq)
            if ".layers.0." in k and ("q_proj" in k or "down_proj" in k):
                ref["nf4." + k] = sd[k].contiguous()
    m64.load_state_dict({k: v.to(torch.float64) for k, v in sd.items()})
    for i, s in enumerate(seqs):
        ref[f"nf4.seq{i}.logits"] = torch.from_numpy(logits_of(m64, s))
    save_file({k: v.contiguous() for k, v in ref.items()}, os.path.join(outdir, "reference.safetensors"),
              metadata={"generator": "tests/reference/make_tiny_models.py",
                        "transformers": transformers.__version__, "torch": torch.__version__,
                        "tokenizer_vocab": str(ntok),
                        "nf4_weights": "bitsandbytes" if checked else "numpy (REFERENCE.md section 3)"})
    total = sum(os.path.getsize(os.path.join(outdir, f)) for f in os.listdir(outdir))
    scale = max(float(np.abs(ref[f"seq{i}.logits"].numpy()).max()) for i in range(len(seqs)))
    print(f"{name}: {total / 1024:.0f} KiB, tokenizer {ntok} tokens, max|logit| {scale:.3f}, "
          f"NF4 by {'bitsandbytes' if checked else 'numpy'}; blocks where numpy's nearest-code "
          f"rule differs from bitsandbytes: {sum(d for _, d in checked)} of "
          f"{sum(sd[k].numel() // 64 for k, _ in checked)}")
    assert total < 1024 * 1024


def main():
    names = sys.argv[1:] or list(MODELS)
    for n in names:
        build(n, MODELS[n])


if __name__ == "__main__":
    main()
