"""Golden fixtures for Kiln's fastText-compatible classifier (issue 16, must-show 3).

Writes, under tests/fixtures/fasttext/:
  train.txt, test.txt   seeded `__label__X text` lines: Shakespeare passages
                        (`clean`), word salad from the same vocabulary (`salad`)
                        and web boilerplate (`boiler`), from
                        ../shared/data/tinyshakespeare.txt
  words.bin             pip fastText supervised model: dim 8, wordNgrams 2,
                        bucket 2000, no char n-grams
  chars.bin             char n-grams minn 2 / maxn 4, bucket 1000, epoch 25
  golden.json           {"fasttext_version": str, "models": {NAME: {"args": {...},
                         "nwords": int, "nlabels": int, "labels": [str],
                         "predictions": [{"text": str, "labels": [str],
                         "probs": [float]}]}}}
                        with k = -1 (every label) and threshold 0, for every
                        held-out line of test.txt (label stripped) plus a few
                        edge cases (unknown words only, tabs, one word)

Probabilities are what `FastText.predict` returns: exp(log(softmax + 1e-5)),
float32 widened to float64 for JSON. Training is deterministic: one thread and
a fixed seed, so reruns write byte-identical .bin files.

Run (own venv; `fasttext-wheel` is the prebuilt pip `fasttext` 0.9.2):
  python3 -m venv target/fasttext-venv
  target/fasttext-venv/bin/pip install fasttext-wheel "numpy<2"
  target/fasttext-venv/bin/python tests/reference/fasttext_reference.py
"""

import json
import random
from pathlib import Path

import fasttext

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "fixtures" / "fasttext"
CORPUS = ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"

BOILER = [
    "Click here to subscribe to our newsletter",
    "All rights reserved. Privacy policy | Terms of use",
    "Accept cookies to continue browsing this site",
    "Home | About us | Contact | Login | Register",
    "Share on Facebook Share on Twitter Share by email",
    "Copyright 2024 Example Media Group Inc.",
    "Sign up now and get 20% off your first order",
    "Read more Related posts Leave a comment",
    "Skip to main content Toggle navigation menu",
    "Powered by WordPress. Theme by Example Themes.",
]

MODELS = {
    "words": dict(dim=8, wordNgrams=2, bucket=2000, minn=0, maxn=0),
    "chars": dict(dim=8, wordNgrams=2, bucket=1000, minn=2, maxn=4, epoch=25),
}
COMMON = dict(lr=0.5, epoch=5, minCount=2, loss="softmax", thread=1, seed=7, verbose=0)


def passages(text):
    """Shakespeare speeches flattened to one line each (fastText reads lines)."""
    out = []
    for block in text.split("\n\n"):
        lines = [ln for ln in block.split("\n") if ln and not ln.endswith(":")]
        if lines:
            out.append(" ".join(lines))
    return out


def make_lines(rng, speeches, vocab, n):
    lines = []
    for i in range(n):
        kind = i % 3
        if kind == 0:
            lines.append(("clean", rng.choice(speeches)))
        elif kind == 1:
            words = [rng.choice(vocab) for _ in range(rng.randint(6, 30))]
            lines.append(("salad", " ".join(words)))
        else:
            parts = rng.sample(BOILER, rng.randint(1, 3))
            lines.append(("boiler", " ".join(parts)))
    return lines


def write_lines(path, lines):
    with open(path, "w", encoding="utf-8") as f:
        for label, text in lines:
            f.write(f"__label__{label} {text}\n")


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    rng = random.Random(16)
    speeches = [s for s in passages(CORPUS.read_text(encoding="utf-8")) if len(s) < 240]
    rng.shuffle(speeches)
    vocab = sorted({w for s in speeches[:2000] for w in s.split()})
    # Disjoint speeches for train and test, so held-out lines are unseen.
    train = make_lines(rng, speeches[:300], vocab, 270)
    test = make_lines(rng, speeches[300:], vocab, 45)
    write_lines(OUT / "train.txt", train)
    write_lines(OUT / "test.txt", test)

    texts = [text for _, text in test] + [
        "zzqx qqvv wwxx",  # unknown words: hidden vector is </s> plus n-gram buckets
        "Romeo",
        "tabs\tand  double   spaces between words",
        "",  # empty line: only </s>
    ]
    golden = {"fasttext_version": "0.9.2", "models": {}}
    for name, extra in MODELS.items():
        args = {**COMMON, **extra}
        model = fasttext.train_supervised(input=str(OUT / "train.txt"), **args)
        model.save_model(str(OUT / f"{name}.bin"))
        preds = []
        for text in texts:
            # model.f.predict returns [(prob, label)]; the numpy wrapper adds nothing.
            pairs = model.f.predict(text + "\n", -1, 0.0, "strict")
            preds.append(
                {
                    "text": text,
                    "labels": [label for _, label in pairs],
                    "probs": [float(p) for p, _ in pairs],
                }
            )
        golden["models"][name] = {
            "args": args,
            "nwords": len(model.words),
            "nlabels": len(model.labels),
            "labels": list(model.labels),
            "predictions": preds,
        }
    with open(OUT / "golden.json", "w", encoding="utf-8") as f:
        json.dump(golden, f, indent=1)
        f.write("\n")
    for p in sorted(OUT.iterdir()):
        print(f"{p.name}: {p.stat().st_size} bytes")


if __name__ == "__main__":
    main()
