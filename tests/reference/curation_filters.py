"""Golden fixture for Kiln's heuristic document filters (issue 16, must-show 1).

Writes tests/fixtures/curation/filters.jsonl.gz: one JSON object per line,
  {"text": "case N", "case": CASE}, read by Kiln's own JSONL reader (which
skips empty texts, hence the document itself sits inside CASE):
  {"text": str,
   "n_words": int,             # len(datatrove.utils.text.split_into_words(text)), for diagnostics
   "gopher_quality": str,      # "keep" or datatrove's drop reason
   "gopher_repetition": str,
   "c4": str,                  # C4QualityFilter document decision
   "c4_text": str | null,      # C4QualityFilter's text after line removal (kept documents only)
   "fineweb": str}
A filter that raises (datatrove divides by a zero word count in FineWeb's
list_ratio) is recorded as "error" and skipped by the Rust test.
and tests/fixtures/curation/filters.versions.json: {"datatrove", "spacy", "documents"}.

The documents are generated here, deterministically (random.Random(16)), from the
word list below plus seeded corruptions (word salad, repeated lines and
paragraphs, bullets, ellipses, hashes, symbols, lorem ipsum, javascript and policy
lines, curly brackets, citations, short lines, long words, non-ASCII and CJK,
empty documents), with intensities drawn so that many documents sit near each
rule's threshold.

datatrove tokenises English words with spaCy's blank "en" tokenizer (and splits
sentences with its sentencizer), so both must be installed:
  python3 -m venv target/curation-venv
  target/curation-venv/bin/pip install datatrove spacy regex
  target/curation-venv/bin/python tests/reference/curation_filters.py
  # the Rust copy of spaCy's tokenizer exceptions (data/src/curate/filters/exceptions.rs):
  target/curation-venv/bin/python tests/reference/curation_filters.py --write-exceptions
"""

import gzip
import json
import os
import random

from importlib.metadata import version

import spacy
from datatrove.data import Document
from datatrove.pipeline.filters import (
    C4QualityFilter,
    FineWebQualityFilter,
    GopherQualityFilter,
    GopherRepetitionFilter,
)
from datatrove.utils.text import split_into_words

OUT = os.path.join(os.path.dirname(__file__), "..", "fixtures", "curation", "filters.jsonl.gz")

STOP = "the be to of and that have with".split()
WORDS = (
    "time person year way day thing man world life hand part child eye woman place work week "
    "case point government company number group problem fact river garden window morning "
    "letter story music country city water light house family school friend reason moment "
    "answer question market history village winter summer evening kitchen table mountain "
    "good new first last long great little own other old right big high different small large "
    "next early young important few public bad same able quiet bright careful gentle sudden "
    "is was are were said made went took came saw knew got gave found thought told became left "
    "felt brought began kept held stood heard let meant set met ran paid sat spoke lay led "
    "in on at by for from up about into over after under between through during without "
    "a an this his her their our its my your some every each many most "
    "he she it we they you i who which what when where why how not only also very often "
    "understanding extraordinary responsibility international communication characteristic "
    "approximately environmental neighbourhood unfortunately administration"
).split()
NO_STOP = [w for w in WORDS if w not in STOP]
ACCENTED = "café naïve résumé façade über Straße jalapeño crème déjà coöperate".split()
CYRILLIC = "привет мир книга вода время человек".split()
CJK = ["这是一个测试", "日本語の文章です", "데이터", "中文文本处理", "東京タワー"]
SYMBOLS = ["#", "##", "$", "%", "&", "@", "*", "...", "…", "|", "--", "+", "=", "/", "§", "©", "®", "€", "😀", "→"]
INFORMAL = (
    "don't it's I'm can't won't they're we've you'll she'd isn't Mr. Dr. Mrs. e.g. i.e. U.S. a.m. "
    "p.m. o'clock :) ;) <3 :-( http://example.com/page https://kiln.dev/docs?q=1 www.example.org C++ "
    "and/or etc. vs. gonna cannot y'all 'em 5km 50% $20 3.5 (see) [note] well-known x-ray 10-20 "
    "co-operate he/she \"quoted\" 'single' it’s don’t"
).split()
POLICY = ["terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies", "use cookies"]


def sentence(rng, words=WORDS, lo=4, hi=16, stop_p=0.25):
    n = rng.randint(lo, hi)
    out = []
    for _ in range(n):
        out.append(rng.choice(STOP) if rng.random() < stop_p else rng.choice(words))
    if rng.random() < 0.2 and n > 4:
        out[rng.randrange(1, n - 1)] += ","
    s = " ".join(out)
    s = s[0].upper() + s[1:]
    return s + rng.choice([".", ".", ".", ".", "!", "?", "", ";", "...", ":", '."'])


def paragraph(rng, n=None, **kw):
    n = n or rng.randint(1, 6)
    return " ".join(sentence(rng, **kw) for _ in range(n))


def prose(rng, paras=None, **kw):
    paras = paras or rng.randint(1, 5)
    sep = rng.choice(["\n", "\n\n", "\n\n", "\n\n\n"])
    return sep.join(paragraph(rng, **kw) for _ in range(paras))


def corrupt_lines(rng, text, make_line, frac):
    lines = text.split("\n")
    out = []
    for line in lines:
        out.append(make_line(rng, line) if rng.random() < frac else line)
    return "\n".join(out)


def gen_doc(rng):
    kind = rng.randrange(26)
    if kind == 25:  # lines of 26..34 characters: FineWeb's short-line boundary (<= 30)
        lines = []
        for _ in range(rng.randint(3, 9)):
            n = rng.randint(26, 34)
            t = " ".join(sentence(rng, lo=12, hi=16) for _ in range(2))
            lines.append(t[: n - 1].rstrip() + "x" * (n - 1 - len(t[: n - 1].rstrip())) + ".")
        return "\n".join(lines)
    if kind == 24:  # informal web text: contractions, abbreviations, URLs, emoticons
        return prose(rng, words=WORDS + INFORMAL * rng.randint(1, 4))
    if kind == 0:  # clean prose, any length
        return prose(rng)
    if kind == 1:  # short documents
        return paragraph(rng, n=rng.randint(1, 5))
    if kind == 2:  # long-word salad
        long_w = [w for w in WORDS if len(w) > 8]
        return prose(rng, words=long_w + WORDS[:20], stop_p=rng.random() * 0.2)
    if kind == 3:  # short-word salad
        short_w = [w for w in WORDS if len(w) <= 3] + ["x", "y", "ok", "no", "go"]
        return prose(rng, words=short_w, stop_p=rng.random() * 0.3)
    if kind == 4:  # hashes
        t = prose(rng, paras=rng.randint(2, 5))
        words = t.split(" ")
        p = rng.random() * 0.25
        return " ".join(("#" + w if rng.random() < p else w) for w in words)
    if kind == 5:  # ellipses inline and at line ends
        t = prose(rng, paras=rng.randint(2, 6))
        p = rng.random() * 0.6
        t = corrupt_lines(rng, t, lambda r, l: l.rstrip(".!?") + r.choice(["...", "…", " ..."]), p)
        q = rng.random() * 0.25 if rng.random() < 0.5 else 0.0
        return " ".join((w + rng.choice(["...", "…"]) if rng.random() < q else w) for w in t.split(" "))
    if kind == 6:  # bullet lists
        n = rng.randint(5, 30)
        p = rng.random() if rng.random() < 0.5 else rng.uniform(0.85, 1.0)
        lines = []
        for _ in range(n):
            s = sentence(rng)
            lines.append((rng.choice(["- ", "• ", "  - ", "-"]) + s) if rng.random() < p else s)
        return "\n".join(lines)
    if kind == 7:  # symbols and numbers (non-alpha words)
        t = prose(rng, paras=rng.randint(2, 5))
        p = rng.random() * 0.5
        out = []
        for w in t.split(" "):
            out.append(w)
            if rng.random() < p:
                out.append(rng.choice(SYMBOLS + [str(rng.randint(0, 99999)), "12.5", "3,000", "1990"]))
        return " ".join(out)
    if kind == 8:  # few or no stop words
        return prose(rng, words=NO_STOP, stop_p=rng.choice([0.0, 0.0, 0.005, 0.02]))
    if kind == 9:  # repeated lines
        base = [sentence(rng) for _ in range(rng.randint(3, 20))]
        k = rng.randint(1, 6)
        reps = [rng.choice(base[:k]) for _ in range(rng.randint(0, len(base)))]
        lines = base + reps
        rng.shuffle(lines)
        return "\n".join(lines)
    if kind == 10:  # repeated paragraphs
        paras = [paragraph(rng) for _ in range(rng.randint(2, 8))]
        paras += [rng.choice(paras) for _ in range(rng.randint(0, 5))]
        rng.shuffle(paras)
        return "\n\n".join(paras)
    if kind == 11:  # repeated n-grams (phrases) inside prose
        phrase = " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 10)))
        out = []
        for _ in range(rng.randint(5, 40)):
            out.append(sentence(rng, lo=2, hi=10) if rng.random() < 0.6 else phrase)
        return " ".join(out) + "."
    if kind == 12:  # lorem ipsum
        t = prose(rng, paras=rng.randint(2, 4))
        lorem = rng.choice(["Lorem ipsum dolor sit amet, consectetur adipiscing elit.", "lorem ipsum dolor", "LOREM IPSUM text here now."])
        lines = t.split("\n")
        lines.insert(rng.randrange(len(lines) + 1), lorem)
        return "\n".join(lines)
    if kind == 13:  # javascript and policy lines (C4 line removal)
        t = prose(rng, paras=rng.randint(2, 6))
        extra = [
            "Please enable JavaScript to view the comments powered by Disqus.",
            "This site uses cookies to improve your experience.",
            f"Read our {rng.choice(POLICY)} before you continue.",
            "Javascript is required.",
        ]
        lines = t.split("\n")
        for _ in range(rng.randint(1, 4)):
            lines.insert(rng.randrange(len(lines) + 1), rng.choice(extra))
        return "\n".join(lines)
    if kind == 14:  # curly brackets and code
        t = prose(rng, paras=rng.randint(2, 5))
        code = rng.choice(["function f() { return 1; }", "var x = {a: 1};", "if (x) { y(); }", "}", "Set the {name} field in the form below.", "Use a {curly} bracket here, she said!"])
        lines = t.split("\n")
        lines.insert(rng.randrange(len(lines) + 1), code)
        return "\n".join(lines)
    if kind == 15:  # citations
        t = prose(rng, paras=rng.randint(2, 5))
        out = []
        for w in t.split(" "):
            out.append(w + (rng.choice(["[1]", "[23]", "[edit]", "[citation needed]", "[]"]) if rng.random() < 0.1 else ""))
        return " ".join(out)
    if kind == 16:  # menus and titles: short lines without punctuation
        lines = []
        p = rng.random()
        for _ in range(rng.randint(3, 30)):
            if rng.random() < p:
                lines.append(" ".join(rng.choice(WORDS).capitalize() for _ in range(rng.randint(1, 4))))
            else:
                lines.append(sentence(rng, lo=6, hi=20))
        return "\n".join(lines)
    if kind == 17:  # lists: many newlines per word
        if rng.random() < 0.6:
            long_w = ["internationalization", "counterrevolutionary", "incomprehensibilities", "electroencephalograph"]
            return "\n".join(
                " ".join(rng.choice(long_w) + str(rng.randint(10, 99)) for _ in range(rng.randint(1, 4))) + rng.choice(["", ".", "!"])
                for _ in range(rng.randint(5, 40))
            )
        return "\n".join(rng.choice(WORDS) + rng.choice(["", ".", "!"]) for _ in range(rng.randint(5, 80)))
    if kind == 18:  # long words
        t = prose(rng, paras=rng.randint(2, 4))
        lw = rng.choice(["a", "xy", "word"]) * rng.randint(100, 700)
        lines = t.split("\n")
        lines.insert(rng.randrange(len(lines) + 1), f"A line with {lw} inside it now.")
        return "\n".join(lines)
    if kind == 19:  # non-ASCII Latin and Cyrillic
        words = WORDS + ACCENTED * 3 + CYRILLIC * rng.randint(0, 3)
        return prose(rng, words=words)
    if kind == 20:  # CJK, emoji
        t = prose(rng, paras=rng.randint(1, 3))
        out = []
        for w in t.split(" "):
            out.append(w)
            if rng.random() < 0.2:
                out.append(rng.choice(CJK + ["😀", "🙂👍", "。", "！"]))
        return " ".join(out) if rng.random() < 0.7 else "。".join(rng.choice(CJK) for _ in range(rng.randint(1, 30)))
    if kind == 21:  # odd whitespace and empties
        return rng.choice(["", " ", "\n", "\n\n\n", "\t", "a", ".", "...", "#", "- ", "\u2028", "x\r\ny", "word\x0bword\x0cend."])
    if kind == 22:  # mixture of several corruptions
        t = gen_doc(rng)
        u = gen_doc(rng)
        return t + rng.choice(["\n", "\n\n", " "]) + u
    # near-duplicate lines within otherwise clean text (fineweb char_dup_ratio)
    t = prose(rng, paras=rng.randint(3, 8))
    lines = [l for l in t.split("\n") if l]
    if lines:
        for _ in range(rng.randint(0, 2)):
            lines.insert(rng.randrange(len(lines) + 1), rng.choice(lines))
    return "\n".join(lines)


def write_exceptions(path="data/src/curate/filters/exceptions.rs"):
    """Writes spaCy's English tokenizer exceptions as the Rust table Kiln uses."""
    rules = spacy.blank("en").tokenizer.rules
    items = [(k, [t[65] for t in v]) for k, v in rules.items()]  # 65 = ORTH
    items = [(k, v) for k, v in items if not any(c.isspace() for c in k) and k not in ("\\n", "\\t", "<space>")]
    items.sort(key=lambda kv: kv[0].encode())  # Rust compares &str by bytes

    def lit(s):
        return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'

    out = [
        "//! spaCy 3.8's English tokenizer exceptions (`nlp.tokenizer.rules` of",
        '//! `spacy.blank("en")`, whitespace entries left out): a chunk spelled as a key',
        "//! becomes the listed tokens (\"don't\" -> \"do\", \"n't\"; \"e.g.\" stays whole).",
        "//! Generated: sorted by UTF-8 bytes for binary search; regenerate with the",
        "//! snippet in tests/reference/curation_filters.py (`write_exceptions`).",
        "",
        "#[rustfmt::skip]",
        "pub(super) const EXCEPTIONS: &[(&str, &[&str])] = &[",
    ]
    out += ["    (%s, &[%s])," % (lit(k), ", ".join(lit(t) for t in v)) for k, v in items]
    out.append("];")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


def decide(f, text):
    try:
        r = f.filter(Document(text=text, id="x"))
    except ZeroDivisionError:
        return "error"
    if r is True:
        return "keep"
    if isinstance(r, tuple):
        return r[1]
    return "keep" if r else "drop"


def main():
    rng = random.Random(16)
    filters = {
        "gopher_quality": GopherQualityFilter(),
        "gopher_repetition": GopherRepetitionFilter(),
        "fineweb": FineWebQualityFilter(),
    }
    docs = [gen_doc(rng) for _ in range(3000)]
    # Gopher's max_doc_words (100,000) at its boundary; repetitive, so tiny gzipped.
    base = "The river of time and the garden that we have with care".split()
    docs += [" ".join(base[i % len(base)] for i in range(n)) + "." for n in (100_000, 100_001)]
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    counts = {}
    rows = []
    for text in docs:
        row = {"text": text, "n_words": len(split_into_words(text))}
        for name, f in filters.items():
            row[name] = decide(f, text)
        # C4 rewrites doc.text in place (line removal), so it gets its own Document.
        c4 = C4QualityFilter()
        d = Document(text=text, id="x")
        r = c4.filter(d)
        row["c4"] = "keep" if r is True else r[1]
        row["c4_text"] = d.text if r is True else None
        for name in ("gopher_quality", "gopher_repetition", "c4", "fineweb"):
            counts.setdefault(name, {}).setdefault(row[name], 0)
            counts[name][row[name]] += 1
        rows.append(row)
    versions = {"datatrove": version("datatrove"), "spacy": spacy.__version__, "documents": len(rows)}
    with open(OUT.replace(".jsonl.gz", ".versions.json"), "w") as f:
        f.write(json.dumps(versions, indent=1) + "\n")
    with gzip.GzipFile(OUT, "wb", mtime=0) as f:
        for i, row in enumerate(rows):
            f.write((json.dumps({"text": f"case {i}", "case": row}, ensure_ascii=False) + "\n").encode())
    for name, c in counts.items():
        print(name, dict(sorted(c.items(), key=lambda kv: -kv[1])))
    print("wrote", OUT, os.path.getsize(OUT), "bytes")


if __name__ == "__main__":
    import sys

    if sys.argv[1:] == ["--write-exceptions"]:
        write_exceptions()
    else:
        main()
