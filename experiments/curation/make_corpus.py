#!/usr/bin/env python3
"""Builds the curation experiment's corpora from tinyshakespeare (stdlib only, seeded).

    python3 experiments/curation/make_corpus.py SHAKESPEARE.txt OUT_DIR

The text is cut by position into three disjoint regions:
  0-80%   clean training documents (speeches grouped to >= 60 words)
  80-90%  "reference" clean text: the classifier's positive examples and the
          perplexity proxy's training text
  90-100% the clean validation text every arm is scored on (clean_val.txt)

Noise documents (seeded) of six kinds, as issue 16 lists them: word salad, shuffled
sentences, boilerplate, repeated lines, mojibake and random characters. Word salad,
shuffled sentences, repeated lines and mojibake are made from the same region's clean
documents, so noise never leaks validation text.

Writes into OUT_DIR:
  web.jsonl              clean + noise documents, shuffled: {"id", "text", "kind"}
  clean_val.txt          held-out clean text (no line of it occurs in web.jsonl)
  classifier_train.txt   fastText lines: __label__clean from 80-90%, __label__noise made
                         with another seed from the same region
  proxy_train.txt        80-90% clean text (the perplexity proxy model's data)
  doremi/{plays_a,plays_b,web}.jsonl   three domains: two clean halves of the training
                         region and a "web" domain that is mostly noise (all six kinds)
  doremi/web_spam.jsonl  the "web" domain again, its noise only random characters and
                         boilerplate
  stats.json             documents and characters per kind
"""

import json
import os
import random
import sys

BOILER = [
    "Home | About us | Contact | Login | Register",
    "Read more Related posts Leave a comment",
    "We use cookies to improve your experience. By continuing you accept our cookie policy.",
    "Copyright 2024 All rights reserved. Terms of service. Privacy policy.",
    "Click here to subscribe to our newsletter and get 10% off your first order!",
    "Share on Facebook Share on Twitter Share by email Print this page",
    "Posted by admin in Uncategorized | 0 comments | Tags: news, updates, blog",
    "Skip to main content Search this site Menu Close menu",
]


def speeches(text):
    return [b.strip() for b in text.split("\n\n") if b.strip()]


def documents(blocks, min_words=60):
    docs, cur = [], []
    for b in blocks:
        cur.append(b)
        if sum(len(x.split()) for x in cur) >= min_words:
            docs.append("\n\n".join(cur))
            cur = []
    return docs


def mojibake(text):
    try:
        return text.encode("utf-8").decode("latin-1").replace("e", "Ã©").replace("'", "â€™")
    except UnicodeError:
        return text


def noise_doc(kind, rng, clean_docs, words):
    n = rng.randint(60, 180)
    if kind == "salad":
        return " ".join(rng.choice(words) for _ in range(n))
    if kind == "shuffled":
        doc = rng.choice(clean_docs)
        lines = doc.split("\n")
        rng.shuffle(lines)
        return "\n".join(lines)
    if kind == "boilerplate":
        return "\n".join(rng.choice(BOILER) for _ in range(rng.randint(6, 16)))
    if kind == "repeated":
        line = rng.choice(rng.choice(clean_docs).split("\n"))
        return "\n".join([line] * rng.randint(8, 20))
    if kind == "mojibake":
        return mojibake(rng.choice(clean_docs))
    if kind == "random":
        alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,;:!?'-#&*"
        return "".join(rng.choice(alphabet) for _ in range(n * 6))
    raise ValueError(kind)


KINDS = ["salad", "shuffled", "boilerplate", "repeated", "mojibake", "random"]


def noise_set(count, rng, clean_docs):
    words = " ".join(clean_docs).split()
    return [(KINDS[i % len(KINDS)], noise_doc(KINDS[i % len(KINDS)], rng, clean_docs, words)) for i in range(count)]


def write_jsonl(path, docs):
    with open(path, "w") as f:
        for i, (kind, text) in enumerate(docs):
            f.write(json.dumps({"id": f"{os.path.basename(path)[:-6]}-{i:05d}", "text": text, "kind": kind}) + "\n")


def main():
    src, out = sys.argv[1], sys.argv[2]
    os.makedirs(os.path.join(out, "doremi"), exist_ok=True)
    text = open(src, encoding="utf-8").read()
    a, b = int(len(text) * 0.8), int(len(text) * 0.9)
    # Cut at block boundaries so no speech spans two regions.
    a = text.rfind("\n\n", 0, a) + 2
    b = text.rfind("\n\n", 0, b) + 2
    train_docs = documents(speeches(text[:a]))
    ref_docs = documents(speeches(text[a:b]))
    val = text[b:]

    rng = random.Random(1234)
    noise = noise_set(len(train_docs), rng, train_docs)
    web = [("clean", d) for d in train_docs] + noise
    rng.shuffle(web)
    write_jsonl(os.path.join(out, "web.jsonl"), web)

    with open(os.path.join(out, "clean_val.txt"), "w") as f:
        f.write(val)
    with open(os.path.join(out, "proxy_train.txt"), "w") as f:
        f.write("\n\n".join(ref_docs))
    crng = random.Random(99)
    lines = [f"__label__clean {d}" for d in ref_docs]
    lines += [f"__label__noise {t}" for _, t in noise_set(len(ref_docs), crng, ref_docs)]
    crng.shuffle(lines)
    with open(os.path.join(out, "classifier_train.txt"), "w") as f:
        f.write("\n".join(l.replace("\n", " ") for l in lines) + "\n")

    # DoReMi: two clean halves, and a web domain of noise with a little clean text.
    drng = random.Random(7)
    half = len(train_docs) // 2
    plays_a, plays_b = train_docs[:half], train_docs[half:]
    web_clean = drng.sample(train_docs, len(train_docs) // 10)
    web_noise = noise_set(len(train_docs), drng, train_docs)
    web_dom = [("clean", d) for d in web_clean] + web_noise
    drng.shuffle(web_dom)
    write_jsonl(os.path.join(out, "doremi", "plays_a.jsonl"), [("clean", d) for d in plays_a])
    write_jsonl(os.path.join(out, "doremi", "plays_b.jsonl"), [("clean", d) for d in plays_b])
    write_jsonl(os.path.join(out, "doremi", "web.jsonl"), web_dom)
    # A second "web" domain whose noise a language model cannot learn from: random
    # characters and boilerplate (the two kinds whose loss is not the clean text's: see
    # the README). Its own seed, so the files above stay as they were.
    srng = random.Random(11)
    spam = [(k, noise_doc(k, srng, train_docs, None)) for k in ["random", "boilerplate"] * (len(train_docs) // 2)]
    spam_dom = [("clean", d) for d in srng.sample(train_docs, len(train_docs) // 10)] + spam
    srng.shuffle(spam_dom)
    write_jsonl(os.path.join(out, "doremi", "web_spam.jsonl"), spam_dom)

    stats = {}
    for kind, t in web:
        s = stats.setdefault(kind, {"docs": 0, "chars": 0})
        s["docs"] += 1
        s["chars"] += len(t)
    stats["_val_chars"] = len(val)
    stats["_doremi_chars"] = {
        "plays_a": sum(len(d) for d in plays_a),
        "plays_b": sum(len(d) for d in plays_b),
        "web": sum(len(t) for _, t in web_dom),
        "web_noise_share": sum(len(t) for k, t in web_dom if k != "clean") / sum(len(t) for _, t in web_dom),
        "web_spam": sum(len(t) for _, t in spam_dom),
        "web_spam_noise_share": sum(len(t) for k, t in spam_dom if k != "clean") / sum(len(t) for _, t in spam_dom),
    }
    with open(os.path.join(out, "stats.json"), "w") as f:
        json.dump(stats, f, indent=1)
    print(json.dumps(stats))


if __name__ == "__main__":
    main()
