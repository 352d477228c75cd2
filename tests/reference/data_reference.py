"""Golden fixtures for Kiln's corpus readers and tokenizer (issue 3, must-show 1).

Writes into tests/fixtures/data/:
  tokenizer.json      a GPT-2 style byte-level BPE (vocab 512, `<|endoftext|>` = id 0)
                      trained with Python `tokenizers` on the documents below
  web.parquet         FineWeb layout (id: int64, url: string, text: string), written
                      by pyarrow with snappy compression and row groups of 5 rows
  web-zstd.parquet    the same table, zstd-compressed
  books.jsonl         dolma layout {id, text, metadata}, written with Python's json
  books.jsonl.gz      the same bytes, gzip
  books.jsonl.zst     the same bytes, zstd
  expected.json       {"tokenizers_version", "pyarrow_version",
                       "web": [{"id": str, "text": str, "ids": [int]}],
                       "books": [{"id": str, "text": str, "ids": [int]}]}
                      ids = Tokenizer.from_file("tokenizer.json").encode(text,
                      add_special_tokens=False).ids, in file order

Run: /work/venv/bin/python tests/reference/data_reference.py
Deterministic: documents come from a seeded random.Random.
"""

import gzip
import json
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import tokenizers
import zstandard
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

OUT = Path(__file__).resolve().parent.parent / "fixtures" / "data"

WORDS = (
    "the a cat dog river mountain kiln token shard parquet data model train "
    "learning rate don't it's we'll they're café naïve über straße 東京 数据 "
    "emoji 🚀 🔥 numbers 42 3.14159 1,000,000 2024-11-21 e-mail x@y.z "
    "C++ fn() {} [] <tag> $HOME 50% a/b"
).split()


def sentence(rng: random.Random) -> str:
    n = rng.randint(3, 14)
    s = " ".join(rng.choice(WORDS) for _ in range(n))
    return s[0].upper() + s[1:] + rng.choice([".", "!", "?", "...", ""])


def document(rng: random.Random, long: bool = False) -> str:
    paras = []
    for _ in range(rng.randint(8, 12) if long else rng.randint(1, 4)):
        sents = [sentence(rng) for _ in range(rng.randint(2, 8 if not long else 40))]
        paras.append(" ".join(sents))
    sep = rng.choice(["\n", "\n\n", "\n\n\n", "\r\n", "\n  \n"])
    text = sep.join(paras)
    if rng.random() < 0.3:
        text = "  " + text + "\t\n"
    return text


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    rng = random.Random(20241121)
    web = [document(rng) for _ in range(17)]
    web[3] = document(rng, long=True)  # > 8 KiB: exercises chunked encoding
    web[5] = "Literal special token <|endoftext|> inside a document."
    books = [document(rng) for _ in range(11)]
    books[2] = document(rng, long=True)

    # Tokenizer: Kiln's byte-level BPE settings (no prefix space, GPT-2 regex).
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512,
        min_frequency=0,
        show_progress=False,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(web + books, trainer=trainer)
    assert tok.token_to_id("<|endoftext|>") == 0
    tok.save(str(OUT / "tokenizer.json"))
    tok = Tokenizer.from_file(str(OUT / "tokenizer.json"))

    table = pa.table(
        {
            "id": pa.array(list(range(100, 100 + len(web))), type=pa.int64()),
            "url": [f"https://example.com/{i}" for i in range(len(web))],
            "text": web,
        }
    )
    pq.write_table(table, OUT / "web.parquet", row_group_size=5, compression="snappy")
    pq.write_table(table, OUT / "web-zstd.parquet", row_group_size=5, compression="zstd")

    lines = "".join(
        json.dumps({"id": f"b{i}", "text": t, "metadata": {"source": "gen", "n": i}},
                   ensure_ascii=False) + "\n"
        for i, t in enumerate(books)
    ).encode("utf-8")
    (OUT / "books.jsonl").write_bytes(lines)
    (OUT / "books.jsonl.gz").write_bytes(gzip.compress(lines, mtime=0))
    (OUT / "books.jsonl.zst").write_bytes(zstandard.ZstdCompressor(level=3).compress(lines))

    def enc(t: str) -> list:
        return tok.encode(t, add_special_tokens=False).ids

    expected = {
        "tokenizers_version": tokenizers.__version__,
        "pyarrow_version": pa.__version__,
        "web": [{"id": str(100 + i), "text": t, "ids": enc(t)} for i, t in enumerate(web)],
        "books": [{"id": f"b{i}", "text": t, "ids": enc(t)} for i, t in enumerate(books)],
    }
    (OUT / "expected.json").write_text(json.dumps(expected, ensure_ascii=False, indent=0))
    n = sum(len(d["ids"]) for d in expected["web"] + expected["books"])
    print(f"wrote {OUT}: {len(web)} web + {len(books)} books documents, {n} tokens")


if __name__ == "__main__":
    main()
