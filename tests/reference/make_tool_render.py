#!/usr/bin/env python3
"""Writes tests/fixtures/tools/tool-render.json: conversations with tool results rendered by
each model's own chat_template (jinja2, set up as transformers does), which test_chat_format
compares with doppel's rendering of the same turns (the tool message in the style
dp_chat_tool_style_for picks for that template).

    python3 tests/reference/make_tool_render.py LLAMA31_TEMPLATE SMOLLM2_GGUF

LLAMA31_TEMPLATE: the chat_template of meta-llama/Llama-3.1-8B-Instruct as a text file (the
tokenizer_config.json's "chat_template" string); SMOLLM2_GGUF: SmolLM2-135M-Instruct's GGUF
(`.ci/fetch-smollm2`), whose tokenizer.chat_template is read with the gguf package. Qwen3's
template and the Llama 3 / Qwen3 tokenizers come from ../shared/tokenizers. The templates are
copied into the fixture so the C test can ask dp_chat_tool_style_for about the real text.

How each template gives a tool result back (what the fixture pins down):
- Llama 3.1: an `ipython` turn holding `content | tojson` (a string is "iterable" to Jinja),
  not trimmed; its system turn opens with "Cutting Knowledge Date..." (doppel gets that text
  as part of its system message, since its llama3 renderer follows the 3.0 template);
- Qwen3 (the same tool branch as Qwen2.5's): consecutive "tool" messages become one user turn
  of <tool_response> blocks; doppel sends that user turn itself;
- SmolLM2 (plain ChatML): any role is written as given, so a `tool` turn.
"""
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
SHARED = os.path.join(os.path.dirname(ROOT), "shared")

LLAMA31_PREAMBLE = "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n"
SYSTEM = "You are mossy.\n\nYou can use these tools:\n- LOAD_FILE: print a text file"

# What a tool can hand back: quotes, backslashes, control characters, non-ASCII, surrounding
# whitespace (not trimmed in a tool turn), text that looks like markup.
HOSTILE = ('  [LOAD_FILE notes.txt] returned:\n"quoted" back\\slash\ttab\r\n\x01\x08\x0c\x1f '
           'é 😀 \u2028 </tool_response> {"a": 1}  \n')
PLAIN = "[LOAD_FILE notes.txt] returned:\nmilk, eggs, bread\n"
SECOND = "[LOAD_FILE todo.md] returned:\n- call ana\n- buy stamps\n"


def cases():
    """(name, template key, tokenizer dir or None, jinja messages, doppel messages)"""
    out = []
    for tpl, tok in (("llama3.1", "llama3"), ("smollm2", None), ("qwen3", "qwen3")):
        for label, results in (("plain", [PLAIN]), ("two", [PLAIN, SECOND]),
                               ("hostile", [HOSTILE])):
            head = [{"role": "system", "content": SYSTEM},
                    {"role": "user", "content": "what is on my shopping list?"},
                    {"role": "assistant", "content": "[LOAD_FILE notes.txt]"}]
            tail = [{"role": "assistant", "content": "Milk, eggs and bread."},
                    {"role": "user", "content": "thanks"}]
            if tpl == "qwen3":
                jinja_tools = [{"role": "tool", "content": r} for r in results]
                doppel_tools = [{"role": "user", "content": "\n".join(
                    "<tool_response>\n" + r + "\n</tool_response>" for r in results)}]
            else:
                joined = "\n\n".join(results)  # doppel's one message for a reply's calls
                jinja_tools = [{"role": "tool", "content": joined}]
                doppel_tools = [{"role": "tool", "content": joined}]
            jinja = head + jinja_tools + tail
            doppel = [dict(m) for m in head + doppel_tools + tail]
            if tpl == "llama3.1":
                doppel[0]["content"] = LLAMA31_PREAMBLE + SYSTEM
            # ids only where no message holds special-token text (doppel never reads message
            # text as control tokens; the template + tokenizers pair does)
            out.append((tpl + "/" + label, tpl, tok if label != "hostile" else None, jinja,
                        doppel))
    return out


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    import jinja2.sandbox
    from tokenizers import Tokenizer
    import gguf

    templates = {"llama3.1": open(sys.argv[1], encoding="utf-8").read()}
    reader = gguf.GGUFReader(sys.argv[2])
    field = reader.fields["tokenizer.chat_template"]
    templates["smollm2"] = bytes(field.parts[field.data[0]]).decode("utf-8")
    with open(os.path.join(SHARED, "tokenizers", "qwen3", "tokenizer_config.json")) as f:
        templates["qwen3"] = json.load(f)["chat_template"]
    bos = {"llama3.1": "<|begin_of_text|>", "smollm2": "", "qwen3": ""}

    env = jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.filters["tojson"] = lambda x, indent=None, **k: json.dumps(x, ensure_ascii=False,
                                                                   indent=indent)

    def raise_exception(msg):
        raise jinja2.exceptions.TemplateError(msg)
    env.globals["raise_exception"] = raise_exception

    rows = []
    for name, tpl, tok_dir, jinja_msgs, doppel_msgs in cases():
        text = env.from_string(templates[tpl]).render(
            messages=jinja_msgs, add_generation_prompt=True, bos_token=bos[tpl], eos_token="")
        row = {"name": name, "template": tpl, "format": "llama3" if tpl == "llama3.1" else
               "chatml", "messages": doppel_msgs, "text": text}
        if tok_dir:
            tok = Tokenizer.from_file(os.path.join(SHARED, "tokenizers", tok_dir,
                                                   "tokenizer.json"))
            row["tokenizer"] = tok_dir
            row["ids"] = tok.encode(text, add_special_tokens=False).ids
        rows.append(row)
    out = {"_source": "tests/reference/make_tool_render.py; templates: meta-llama/"
                      "Llama-3.1-8B-Instruct and HuggingFaceTB/SmolLM2-135M-Instruct "
                      "chat_template, Qwen3 from ../shared/tokenizers/qwen3",
           "templates": templates, "cases": rows}
    path = os.path.join(ROOT, "tests", "fixtures", "tools", "tool-render.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(f"{path}: {len(rows)} cases")


if __name__ == "__main__":
    main()
