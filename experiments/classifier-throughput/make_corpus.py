"""Seeded clean-vs-noise corpus for the classifier throughput run.

Writes DIR/train.txt (`__label__clean` Shakespeare passages of >= 60 words and
`__label__noise` word salad of the same length, N_TRAIN lines) and
DIR/test.txt (N_TEST unlabelled documents, one per line). Stdlib only.
Usage: python3 make_corpus.py CORPUS DIR N_TRAIN N_TEST
"""

import random
import sys
from pathlib import Path


def docs(text):
    out, cur = [], []
    for line in text.splitlines():
        if not line or line.endswith(":"):
            continue
        cur.extend(line.split())
        if len(cur) >= 60:
            out.append(" ".join(cur))
            cur = []
    return out


def main():
    corpus, out, n_train, n_test = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    rng = random.Random(16)
    clean = docs(Path(corpus).read_text(encoding="utf-8"))
    tokens = [w for d in clean for w in d.split()]

    def example(i):
        d = clean[rng.randrange(len(clean))]
        if i % 2 == 0:
            return "clean", d
        return "noise", " ".join(rng.choice(tokens) for _ in d.split())

    out.mkdir(parents=True, exist_ok=True)
    with open(out / "train.txt", "w", encoding="utf-8") as f:
        for i in range(n_train):
            label, text = example(i)
            f.write(f"__label__{label} {text}\n")
    with open(out / "test.txt", "w", encoding="utf-8") as f:
        for i in range(n_test):
            f.write(example(i)[1] + "\n")


if __name__ == "__main__":
    main()
