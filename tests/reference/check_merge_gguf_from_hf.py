#!/usr/bin/env python3
"""Reference side of tests/cli_merge_gguf_from_hf.sh: doppel merge --format gguf from a Hugging
Face directory, checked with transformers, HF `tokenizers` and llama.cpp (llama-cpp-python).

  check_merge_gguf_from_hf.py make-tiny FAMILY TOKENIZER_DIR OUT_DIR [FAMILY TOKENIZER_DIR OUT_DIR...]
      a tiny random model made on the spot with transformers, carrying a real tokenizer
      (TOKENIZER_DIR's tokenizer.json + tokenizer_config.json): FAMILY qwen2 is
      Qwen2.5-shaped (q/k/v biases, tied embeddings, GQA, the 151936-row vocabulary), llama is
      Llama-3-shaped (untied head, llama3 rope_scaling, 128256 rows). bf16 weights, seeded
      (each model from the same seed, so several in one call are the ones made one per call).
  check_merge_gguf_from_hf.py tokens MODEL.gguf HF_DIR
      llama.cpp loads MODEL.gguf's vocabulary (vocab_only) and tokenizes a varied corpus
      (tests/fixtures/sample-export.csv's lines, emoji, code, CJK, whitespace runs, the chat's
      special tokens): special-token text parsed, no BOS added. HF `tokenizers` encodes the same
      texts with HF_DIR/tokenizer.json, no special tokens added. The ids must be equal; exit 1
      if one text differs. Also prints the GGUF's tokenizer.ggml.pre and add_bos_token.
  check_merge_gguf_from_hf.py chat MODEL.gguf N USER
  check_merge_gguf_from_hf.py chat MODEL.gguf N --out PREFIX USER...
      check_merge_gguf.py's chat (llama.cpp's greedy reply through the GGUF's own template),
      with llama-cpp-python 0.3's detokenizer mended: it reads each token's text into a 32-byte
      buffer and silently drops a longer token (Qwen's "Ġ####...#", 33 bytes, came out empty);
      here the buffer grows to the size llama.cpp asks for. The ids are llama.cpp's own.
"""
import json
import os
import shutil
import sys


def make_tiny(family, tok_dir, out):
    import torch
    import transformers

    torch.manual_seed(7)
    common = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=2048, rms_norm_eps=1e-6,
                  initializer_range=0.25)
    if family == "qwen2":
        cfg = transformers.Qwen2Config(vocab_size=151936, tie_word_embeddings=True, rope_theta=1e6,
                                       bos_token_id=151643, eos_token_id=151645, **common)
        model = transformers.Qwen2ForCausalLM(cfg)
    else:
        cfg = transformers.LlamaConfig(vocab_size=128256, tie_word_embeddings=False,
                                       rope_theta=500000.0, bos_token_id=128000,
                                       eos_token_id=128009,
                                       rope_scaling={"rope_type": "llama3", "factor": 8.0,
                                                     "low_freq_factor": 1.0,
                                                     "high_freq_factor": 4.0,
                                                     "original_max_position_embeddings": 64},
                                       **common)
        model = transformers.LlamaForCausalLM(cfg)
    with torch.no_grad():  # norms off 1 so that a wrong norm shows
        for n, p in model.named_parameters():
            if n.endswith("norm.weight"):
                p.copy_(1 + 0.2 * torch.randn_like(p))
    model.to(torch.bfloat16).save_pretrained(out, safe_serialization=True)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(os.path.join(tok_dir, f), os.path.join(out, f))
    return 0


def corpus():
    texts = ["oi, tudo bem?", "  dois  espaços\n\n e linhas\r\n", "12345 67.89 1,000,000 ٣٤٥",
             "emoji 🙂🙂 👩‍👩‍👧 e acentuação: ção, über", "it's we're THEY'LL I'd", "\t\ttabs\tand   x  ",
             "日本語のテキスト、中文文本，한국어", "def f(x):\n    return x**2  # ok\n\n\n", "kkkkkkkkkkkkkkkkkk",
             "a", "    \n    \n", "x" * 300, "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n",
             "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>",
             "<tool_call>{\"a\": 1}</tool_call> <think>hm</think>", "http://example.com/a?b=c&d=e",
             "ÀÉÎÕÜ àéîõü ñ ß ø æ", "   leading and trailing   ", "CamelCaseWord snake_case_word 3.14159"]
    texts += open("tests/fixtures/sample-export.csv", encoding="utf-8").read().split("\n")[:400]
    return texts


def tokens(gguf_path, hf_dir):
    from llama_cpp import Llama
    from tokenizers import Tokenizer

    # the metadata as llama.cpp itself read it (gguf-py's GGUFReader builds a numpy view per
    # element of the ~150k-token arrays: 25 s a file)
    llm = Llama(model_path=gguf_path, vocab_only=True, verbose=False)
    field = llm.metadata.get
    print(f"{gguf_path}: tokenizer.ggml.pre {field('tokenizer.ggml.pre')!r}, add_bos_token "
          f"{field('tokenizer.ggml.add_bos_token')}, eos {field('tokenizer.ggml.eos_token_id')}, "
          f"eot {field('tokenizer.ggml.eot_token_id')}")
    hf = Tokenizer.from_file(os.path.join(hf_dir, "tokenizer.json"))
    bad = 0
    texts = corpus()
    for s in texts:
        want = hf.encode(s, add_special_tokens=False).ids
        got = llm.tokenize(s.encode("utf-8"), add_bos=False, special=True)
        if want != got:
            bad += 1
            if bad <= 5:
                print(f"differs: {s!r}\n  HF tokenizers {want[:24]}\n  llama.cpp     {got[:24]}")
    print(f"{len(texts) - bad} of {len(texts)} texts: llama.cpp's ids equal HF tokenizers'")
    return 1 if bad else 0


def mend_detokenize():
    import ctypes

    import llama_cpp
    from llama_cpp import _internals

    def detokenize(self, tokens, special=False):
        out = b""
        for t in tokens:
            size = 64
            while True:
                buf = (ctypes.c_char * size)()
                n = llama_cpp.llama_token_to_piece(self.vocab, llama_cpp.llama_token(t), buf, size,
                                                   0, special)
                if n >= 0:
                    out += bytes(buf[:n])
                    break
                size = -n  # llama.cpp returns minus the size it needs
        if tokens and tokens[0] == self.token_bos() and out[:1] == b" ":
            out = out[1:]  # as the original: Llama 1's added space after BOS
        return out

    _internals.LlamaModel.detokenize = detokenize


if __name__ == "__main__":
    if sys.argv[1] == "chat":
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import check_merge_gguf

        mend_detokenize()
        sys.exit(check_merge_gguf.chat_main(sys.argv[2:]))
    if sys.argv[1] == "make-tiny":
        args = sys.argv[2:]
        if not args or len(args) % 3:
            sys.exit("make-tiny: FAMILY TOKENIZER_DIR OUT_DIR, one triple per model")
        sys.exit(max(make_tiny(*args[i:i + 3]) for i in range(0, len(args), 3)))
    sys.exit(tokens(sys.argv[2], sys.argv[3]))
