"""Goldens for models/t5/tokenizer.c: T5TokenizerFast ids on a small model.

Trains a small sentencepiece unigram model with T5's settings (pad 0, eos 1,
unk 2, no bos, nmt_nfkc normalisation, no byte fallback) on a corpus this
script writes itself, and writes

  tests/fixtures/t5_tokenizer/tokenizer/spiece.model
  tests/fixtures/t5_tokenizer/tokenizer/tokenizer_config.json
  tests/fixtures/t5_tokenizer/tokenizer/special_tokens_map.json
      a pipeline's tokenizer/ folder as transformers 4 wrote T5's (the form
      pipelines ship; transformers 5's save_pretrained writes tokenizer.json
      instead), with extra_ids=8 to stay small: vocab 800 + 8 sentinels.
  tests/fixtures/t5_tokenizer/goldens.jsonl
      one JSON object a line: text, max_length, ids, mask (what
      `tok(text, padding="max_length", max_length=N, truncation=True)` gives),
      count (real tokens incl. EOS) and truncated (1 when pieces were cut).
  tests/fixtures/t5_tokenizer/goldens_defaults.jsonl
      the same for a folder holding spiece.model alone (T5's defaults: 100
      extra ids).

The tokenizer is transformers' T5TokenizerFast (in transformers 5 an alias of
the tokenizers-backed T5Tokenizer), loaded with from_pretrained from the
folder above, as F-Lite's pipeline loads it. The script checks that
tokenizer_config.json's `legacy` (true, false or absent) changes no id, so no
second variant folder is written; the C test checks the same on copies.

`--grapheme-table` instead prints the C tables of models/t5/unicode.c that
say which code points continue or break a grapheme cluster, measured on the
tokenizers library itself (see grapheme_table below).

Run from the repository root with the reference environment:

  /work/refenv/bin/python tests/reference/make_t5_tokenizer_goldens.py

Versions that made the committed files: transformers 5.24.0, tokenizers
0.23.3, sentencepiece 0.2.3 (training and the model file), protobuf.
Training is single-threaded with a fixed seed, so reruns give the same files.
"""

import json
import os
import random
import shutil
import sys
import tempfile

import sentencepiece as spm
from transformers import T5TokenizerFast

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "t5_tokenizer")
EXTRA_IDS = 8
VOCAB = 800


def make_corpus():
    """Captions in several scripts plus random syllable words, deterministic."""
    rng = random.Random(1234)
    lines = [
        "A photo of a cat sitting on a red chair next to the window.",
        "Two dogs playing in the snow, high resolution, detailed fur.",
        "An oil painting of a lighthouse at sunset with dramatic clouds.",
        "The quick brown fox jumps over the lazy dog near the river bank.",
        "A portrait of an old man with a beard, wearing a hat, studio lighting.",
        "Café au lait, crème brûlée, naïve façade, déjà vu, São Paulo, Zürich, Kraków.",
        "Ein Hund läuft über die Straße. Der Bäcker backt Brötchen für alle Kunden.",
        "Une jeune fille lit un livre dans le jardin sous les arbres fleuris.",
        "Кошка сидит на окне и смотрит на улицу. Большой красный дом у реки.",
        "Москва зимой, снег падает на улицы города, люди идут домой.",
        "一只猫坐在椅子上。山水画，高清，细节丰富。东京的夜景很美。",
        "日本の桜の木の下でピクニックをする家族。美しい風景写真。",
        "강아지가 공원에서 뛰어놀고 있다. 서울의 밤거리.",
        "Emoji time 😀 🐱 🎨 🌅 ❤️ 👍 🚀 and more 😀😀 fun 🐱🐱.",
        "Numbers 123 456 7890 and prices $5.99, 10% off, 3.14159, 2024-01-01.",
        "Ｆｕｌｌｗｉｄｔｈ ｔｅｘｔ ａｎｄ ①②③ ligatures ﬁ ﬂ and ™ ℃ ½.",
    ]
    words = " ".join(lines).split()
    syl = "ka ri to me na su lo pe de vi ra mo lu ze ba ko shi ten gra phi stro blu ven tor mar lin ost ach".split()
    cyr = "ка ро ми на сто ль де ви пра ну жи ше".split()
    out = []
    for i in range(3000):
        if i % 3 == 0:
            out.append(lines[rng.randrange(len(lines))])
        else:
            out.append(" ".join(rng.choice(words) for _ in range(rng.randint(3, 15))))
    for _ in range(4000):
        ws = []
        for _ in range(rng.randint(3, 12)):
            src = syl if rng.random() < 0.8 else cyr
            ws.append("".join(rng.choice(src) for _ in range(rng.randint(1, 4))))
        out.append(" ".join(ws))
    return "\n".join(out) + "\n"


def train(workdir):
    corpus = os.path.join(workdir, "corpus.txt")
    with open(corpus, "w", encoding="utf-8") as f:
        f.write(make_corpus())
    spm.set_random_generator_seed(1)
    # Relative names: the trainer spec records them in the model file.
    cwd = os.getcwd()
    os.chdir(workdir)
    try:
        spm.SentencePieceTrainer.train(
            input="corpus.txt", model_prefix="m", vocab_size=VOCAB, model_type="unigram",
            pad_id=0, eos_id=1, unk_id=2, bos_id=-1, normalization_rule_name="nmt_nfkc",
            byte_fallback=False, character_coverage=0.9995, num_threads=1, minloglevel=2)
    finally:
        os.chdir(cwd)
    return os.path.join(workdir, "m.model")


def write_folder(folder, model, config):
    os.makedirs(folder, exist_ok=True)
    shutil.copyfile(model, os.path.join(folder, "spiece.model"))
    if config is None:
        return
    with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)
        f.write("\n")
    sentinels = [f"<extra_id_{i}>" for i in range(EXTRA_IDS)]
    stm = {"additional_special_tokens": sentinels, "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"}
    with open(os.path.join(folder, "special_tokens_map.json"), "w") as f:
        json.dump(stm, f, indent=2, sort_keys=True)
        f.write("\n")


def t5_config(legacy):
    """tokenizer_config.json as transformers 4 saved T5's (google/t5-v1_1-*)."""
    sentinels = [f"<extra_id_{i}>" for i in range(EXTRA_IDS)]
    added = {}
    for i, t in enumerate(["<pad>", "</s>", "<unk>"]):
        added[str(i)] = t
    for i in range(EXTRA_IDS):
        added[str(VOCAB + EXTRA_IDS - 1 - i)] = sentinels[i]
    cfg = {
        "additional_special_tokens": sentinels,
        "added_tokens_decoder": {k: {"content": v, "lstrip": False, "normalized": False, "rstrip": False,
                                     "single_word": False, "special": True} for k, v in added.items()},
        "clean_up_tokenization_spaces": True,
        "eos_token": "</s>",
        "extra_ids": EXTRA_IDS,
        "model_max_length": 512,
        "pad_token": "<pad>",
        "sp_model_kwargs": {},
        "tokenizer_class": "T5Tokenizer",
        "unk_token": "<unk>",
    }
    if legacy is not None:
        cfg["legacy"] = legacy
    return cfg


LONG = ("A highly detailed digital painting of an ancient castle on a cliff above a stormy sea, "
        "lightning in the dark clouds, waves crashing on the rocks, a small boat with a red sail, "
        "seagulls, dramatic lighting, cinematic composition, trending on artstation, 8k resolution. "
        "Кошка сидит на окне. 日本の桜の木の下でピクニックをする家族。 Café crème brûlée 😀 🐱 ")

MEDIUM = "Two dogs playing in the snow, high resolution, detailed fur. Кошка сидит на окне 😀"

FIXED = [
    "", " ", "   ", "\t", "\n", " \t\n ", "a", "A photo of a cat sitting on a red chair next to the window.",
    " leading space", "   leading spaces", "trailing space ", "trailing spaces   ", "  both sides  ",
    "runs    of     spaces", "tabs\tand\t\ttabs", "new\nlines\n\nhere\n", "cr\r\nlf\rcr", "\u00a0nbsp\u00a0x\u00a0",
    "ideographic\u3000space", "zero\u200bwidth\u200bspace", "soft\u00adhyphen", "nel\u0085line", "em\u2003space",
    "Café crème brûlée, naïve façade, Zürich", "Cafe\u0301 cre\u0300me (NFD)", "Vie\u0323\u0302t Nam (NFD)",
    "Vi\u1ec7t Nam", "e\u0302\u0301", "\uff21\u0301", "\U0001d40a\u0301", "a\u0301\u0302\u0303", "o\u0308\u0304",
    "Ｆｕｌｌｗｉｄｔｈ ｔｅｘｔ", "ligatures ﬁ ﬂ ﬃ", "½ ™ ℃ ① ² ㎏", "¨a ´b", "Ĳ\u089e",
    "Кошка сидит на окне и смотрит на улицу.", "一只猫坐在椅子上。", "日本の桜の木の下で", "ｶﾞｷﾞ ｶ\uff9e",
    "강아지가 공원에서 뛰어놀고 있다.", "ㅋㅋㅠㅠ", "ㄱㅏ ㄴㅏ", "\u1100\u1161\u11a8 (NFD Hangul)",
    "😀", "😀😀 fun 🐱🐱", "👍🏽", "❤️ ❤", "👨\u200d👩\u200d👧", "🇺🇸🇫🇷", "1️⃣", "©\u200d",
    "ΩΩΩ", "Ω Ω", "xΩy", "ΩΩ x ΩΩy", "unknown \u180e mongolian", "🦩🦩 flamingo", "\u0600" "1", "\u0915\u094d\u0937",
    "\u2581hello", "a\u2581\u2581b", "\u2581", "x \u2581 y",
    "</s>", "<pad>", "<unk>", "<extra_id_3>", "a</s>b", "a </s> b", "x<extra_id_3>y", " <extra_id_3> ",
    "word <extra_id_0> word <extra_id_7>", "<extra_id_7><extra_id_0>", "<extra_id_8>", "<extra_id_03>",
    "<extra_id_3 >", "</s></s>", "<<pad>>", "<pad><unk></s>", "<", ">", "< / s >", "<EXTRA_ID_1>",
    "\uff1c/s\uff1e", "\uff1cextra_id_1\uff1e", "\uff1cunk\uff1eΩΩ", "ΩΩ<unk>ΩΩ", "ế<unk>", "\t<extra_id_2>\n",
    "\u00a0</s>\u00a0", "tab\t</s>\tnl\n<pad>",
]


def fuzz_strings(n):
    """Random strings from a pool of the cases where tokenizers and raw
    sentencepiece part: graphemes, whitespace, special tokens, unknowns."""
    rng = random.Random(99)
    pool = ["a", "e", "A", "Ａ", "ｅ", "1", " ", "  ", "\t", "\r", "\n", "\u0301", "\u0302", "\u0323", "\u0308",
            "\u0340", "\u20dd", "\u200d", "\u200c", "\u200b", "\u00ad", "\ufe0f", "\U0001F3FD", "\U0001F468",
            "\u2764", "\U0001F1FA", "\U0001F1F8", "\u1100", "\u1161", "\u11a8", "\uac00", "\u3131", "\u314f",
            "\u314b", "\u3160", "\uffa1", "\uffc2", "\U0001D40A", "\u00a8", "\u2122", "\u00a9", "\u0600",
            "\u0915", "\u094d", "\u0937", "\u0e33", "ﬁ", "½", "\u3000", "\u00a0", "\uff9e", "\uff76", "\u3099",
            "\u05d0", "\u05b7", "\u064b", "\U000E0100", "é", "\u1ec7", "Ω", "\u2581", "<", ">", "</s>",
            "<pad>", "<unk>", "<extra_id_3>", "<extra_id_0>", "\uff1c/s\uff1e", "cat", "сидит", "日本",
            "😀", " the ", "photo", ".", ","]
    out = []
    for _ in range(n):
        out.append("".join(rng.choice(pool) for _ in range(rng.randint(1, 12))))
    return out


def golden(tok, text, max_length):
    enc = tok(text, padding="max_length", max_length=max_length, truncation=True)
    full = tok(text).input_ids
    ids, mask = list(enc.input_ids), list(enc.attention_mask)
    assert len(ids) == max_length and len(mask) == max_length
    return {"text": text, "max_length": max_length, "ids": ids, "mask": mask,
            "count": sum(mask), "truncated": int(len(full) > max_length)}


def cases(tok):
    out = [(t, 24) for t in FIXED]
    out += [(t, 24) for t in fuzz_strings(64)]
    n = len(tok(MEDIUM).input_ids)  # pieces + EOS
    for m in (1, 2, 8, n - 1, n, n + 1):
        out.append((MEDIUM, m))
    out.append((LONG, 77))
    out.append(((LONG + " ") * 3, 512))
    out.append(("<extra_id_1> " * 40, 16))
    return out


def write_goldens(path, tok, items):
    with open(path, "w", encoding="utf-8") as f:
        for text, m in items:
            f.write(json.dumps(golden(tok, text, m), ensure_ascii=True, separators=(",", ":")) + "\n")
    print("wrote", path, len(items), "lines")


def check_legacy(work, model, tok, items):
    """legacy true/false/absent must give the same ids, else a second
    variant folder would be needed."""
    for legacy in (False, None):
        folder = os.path.join(work, f"legacy_{legacy}")
        write_folder(folder, model, t5_config(legacy))
        other = T5TokenizerFast.from_pretrained(folder)
        for text, m in items:
            a = golden(tok, text, m)
            b = golden(other, text, m)
            if a != b:
                sys.exit(f"legacy={legacy} changes the ids of {text!r}: write a variant folder")
    print("legacy true, false and absent give the same ids")


def grapheme_table(tok):
    """The grapheme-cluster classes of the tokenizers library, measured on its
    Precompiled normaliser (which works grapheme by grapheme, and on a
    cluster shorter than 6 bytes maps only its shortest charsmap prefix):

    - continuation (Extend, ZWJ, SpacingMark: GB9, GB9a): X continues
      "\u00aa\u0301" when the result keeps the U+0301 (the cluster reached 6
      bytes and went char by char) instead of dropping it;
    - Prepend (GB9b): X joins the "\u00aa\u0301" after it, likewise;
    - Control (GB4, GB5): "\u0340\u0301" after X stays a cluster of its own,
      whose first char maps to U+0300 and whose U+0301 is dropped.
    ASCII is fixed: controls are C0 and DEL, nothing else joins."""
    norm = tok.backend_tokenizer.normalizer.normalize_str
    assert norm("\u00aa") == "a" and norm("\u0301") == "\u0301" and norm("\u0340") == "\u0300"
    cont, prep, ctl = [], [], list(range(0, 0x20)) + [0x7F]
    for c in range(0x80, 0x110000):
        if 0xD800 <= c < 0xE000:
            continue
        x = chr(c)
        hx = norm(x)
        out = norm("\u00aa\u0301" + x)
        if out == "a\u0301" + hx:
            cont.append(c)
        else:
            assert out == "a" + hx, hex(c)
        out = norm(x + "\u00aa\u0301")
        if out == hx + "a\u0301":
            prep.append(c)
        else:
            assert out == hx + "a", hex(c)
        if c not in cont and c not in prep and norm(x + "\u0340\u0301") == hx + "\u0300":
            ctl.append(c)

    def ranges(cps):
        rs = []
        for c in sorted(cps):
            if rs and rs[-1][1] == c - 1:
                rs[-1][1] = c
            else:
                rs.append([c, c])
        return rs

    def emit(name, cps):
        rs = ranges(cps)
        print(f"static const struct cp_range {name}[{len(rs)}] = {{")
        cells = [f"{{0x{a:X}, 0x{b:X}}}," for a, b in rs]
        line = "   "
        for cell in cells:
            if len(line) + 1 + len(cell) > 100:
                print(line)
                line = "   "
            line += " " + cell
        print(line)
        print("};")

    print("/* Generated by tests/reference/make_t5_tokenizer_goldens.py --grapheme-table")
    import tokenizers
    print(f"   from tokenizers {tokenizers.__version__}. */")
    emit("grapheme_continue", cont)
    emit("grapheme_prepend", prep)
    emit("grapheme_control", ctl)


def main():
    with tempfile.TemporaryDirectory() as work:
        model = train(work)
        folder = os.path.join(ROOT, "tokenizer")
        if "--grapheme-table" in sys.argv:
            tmp = os.path.join(work, "tok")
            write_folder(tmp, model, t5_config(True))
            grapheme_table(T5TokenizerFast.from_pretrained(tmp))
            return
        if os.path.isdir(folder):
            shutil.rmtree(folder)
        write_folder(folder, model, t5_config(True))
        print("wrote", folder)
        tok = T5TokenizerFast.from_pretrained(folder)
        assert len(tok) == VOCAB + EXTRA_IDS and tok.convert_tokens_to_ids("<extra_id_0>") == VOCAB + EXTRA_IDS - 1
        items = cases(tok)
        check_legacy(work, model, tok, items)
        write_goldens(os.path.join(ROOT, "goldens.jsonl"), tok, items)

        bare = os.path.join(work, "bare")
        write_folder(bare, model, None)
        dtok = T5TokenizerFast.from_pretrained(bare)
        assert len(dtok) == VOCAB + 100 and dtok.convert_tokens_to_ids("<extra_id_0>") == VOCAB + 99
        ditems = [(t, 16) for t in FIXED if "extra_id" in t or "</s>" in t] + [("<extra_id_99> <extra_id_42>", 8),
                                                                               (LONG, 16)]
        write_goldens(os.path.join(ROOT, "goldens_defaults.jsonl"), dtok, ditems)


if __name__ == "__main__":
    main()
