#!/usr/bin/env python3
"""Reference token ids from llama.cpp for kiln's tokenizer tests.

    python3 scripts/make_tokenizer_fixtures.py

Needs llama-cpp-python 0.3.36 and jinja2, the models that `scripts/install-models.sh all`
puts in models/, and scripts/fetch_llama_vocab.sh's copy of llama.cpp's Gemma template. Writes runtime/tests/fixtures/tokenizer/{smollm2,gemma3,qwen2}.json: for each
text, llama.cpp's ids without BOS with special=False and special=True, the bytes llama.cpp's
detokenizer gives back for the special=False ids (hex), plus BOS/EOS, the end-of-generation ids,
and chat prompts rendered with jinja2 from the model's own template (Gemma 3's GGUF has none:
llama.cpp's copy of Gemma 2's template, whose turns Gemma 3 shares, renders its prompts).
"""
import json
import os
import sys

import jinja2
import llama_cpp

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = {
    "smollm2": "models/SmolLM2-135M-Instruct.Q4_1.gguf",
    "gemma3": "models/gemma-3-270m-q4_k_m.gguf",
    "qwen2": "models/qwen2.5-coder-0.5b-instruct.gguf",
}
# Put there by scripts/fetch_llama_vocab.sh.
GEMMA_TEMPLATE = os.path.join(ROOT, "models/vocab/google-gemma-2-2b-it.jinja")

PARAGRAPH = (
    "The quick brown fox jumps over the lazy dog. It wasn't the first time, and it won't be "
    "the last: foxes (Vulpes vulpes) are remarkably agile animals, able to leap 2-3 metres "
    "and run at 50 km/h. In 2023, researchers counted 1,234,567 sightings across 42 countries; "
    "see https://example.org/foxes?year=2023&sort=desc#results for the data.\n\n"
)

TEXTS = [
    "",
    " ",
    "  ",
    "\t",
    "\n",
    "\n\n\n",
    " \t \n  \n\t\t",
    "Hello world",
    " Hello world",
    "   leading spaces and trailing   ",
    "Héllo, wörld! Ça va? Ñandú, façade, naïve",
    "日本語のテキストと中文文本",
    "مرحبا بالعالم",
    "नमस्ते दुनिया",
    "Emoji: 😀 👍🏽 👨‍👩‍👧‍👦 🇫🇷🇯🇵 ❤️",
    "1234567 and 3.14159 and 007",
    "def f(x):\n    if x > 0:\n        return x ** 2\n    return -x\n",
    "\tint main() {\n\t\tprintf(\"%d\\n\", 42);\n\t}",
    "I'm sure you're right, they'll say it's what we've done; I'd DON'T",
    "Visit https://www.example.com/path?q=a+b&x=1 or mail me@example.com",
    "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
    "<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n",
    "<bos>text with <eos> inside and <|endoftext|> too",
    "<tool_call>{\"a\": 1}</tool_call>",
    "a\r\nb\rc\r\n\r\n",
    "ALL CAPS TEXT and MiXeD cAsE",
    "!!!???... --- *** ### $$$ %%% ^^^ &&& ((()))",
    "x" * 200,
    "Ünïcödé ⅔ ½ ² ³ Ⅻ ١٢٣ ४५६",
    PARAGRAPH * 3,
]

CHATS = [
    ([{"role": "user", "content": "Hello!"}], True),
    ([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"}], True),
    (
        [
            {"role": "user", "content": "What is 2+2?"},
            {"role": "assistant", "content": "4"},
            {"role": "user", "content": "And 3+3?"},
        ],
        False,
    ),
]


def render(template, messages, add_generation_prompt):
    env = jinja2.Environment(loader=jinja2.BaseLoader())
    env.globals["raise_exception"] = lambda msg: (_ for _ in ()).throw(ValueError(msg))
    return env.from_string(template).render(
        messages=messages, add_generation_prompt=add_generation_prompt, bos_token="", eos_token=""
    )


def main():
    out_dir = os.path.join(ROOT, "runtime/tests/fixtures/tokenizer")
    os.makedirs(out_dir, exist_ok=True)
    for name, rel in MODELS.items():
        path = os.path.join(ROOT, rel)
        if not os.path.exists(path):
            sys.exit(f"{path} is missing: run scripts/install-models.sh all")
        llm = llama_cpp.Llama(model_path=path, vocab_only=True, use_extra_bufts=False, verbose=False)
        vocab = llama_cpp.llama_model_get_vocab(llm._model.model)
        n_vocab = llm.n_vocab()
        cases = []
        for text in TEXTS:
            b = text.encode("utf-8")
            ids = llm.tokenize(b, add_bos=False, special=False)
            ids_special = llm.tokenize(b, add_bos=False, special=True)
            decoded = llm.detokenize(ids, special=False)
            cases.append(
                {
                    "text": text,
                    "ids": ids,
                    "ids_special": ids_special,
                    "ids_add_special": llm.tokenize(b, add_bos=True, special=False),
                    "decoded_hex": decoded.hex(),
                }
            )
        template = llm.metadata.get("tokenizer.chat_template")
        source = "gguf"
        if template is None and name == "gemma3":
            template = open(GEMMA_TEMPLATE).read()
            source = os.path.basename(GEMMA_TEMPLATE)
        chats = []
        for messages, agp in CHATS:
            if source != "gguf" and messages[0]["role"] == "system":
                continue  # Gemma 2's template rejects system messages
            chats.append(
                {"messages": messages, "add_generation_prompt": agp, "prompt": render(template, messages, agp)}
            )
        fixture = {
            "model": rel,
            "reference": f"llama-cpp-python {llama_cpp.__version__} (vocab_only)",
            "n_vocab": n_vocab,
            "bos": llm.token_bos(),
            "eos": llm.token_eos(),
            "eog": [i for i in range(n_vocab) if llama_cpp.llama_vocab_is_eog(vocab, i)],
            "chat_template_source": source,
            "chats": chats,
            "cases": cases,
        }
        with open(os.path.join(out_dir, f"{name}.json"), "w") as f:
            json.dump(fixture, f, ensure_ascii=False, indent=1)
        print(name, len(cases), "cases")


if __name__ == "__main__":
    main()
