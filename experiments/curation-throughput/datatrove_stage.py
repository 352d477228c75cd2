"""Scoring throughput of one datatrove 0.10.1 stage on one core: the time of
`filter(doc)` (filters) or `get_signature(get_shingles(text))` (MinHash
stage 1) summed over the corpus, reading excluded, as kiln times its stages.

usage: datatrove_stage.py CORPUS.jsonl STAGE  ->  prints `STAGE DOCS SECONDS`
"""

import json
import sys
import time

import xxhash

from datatrove.data import Document
from datatrove.pipeline.dedup.minhash import MinhashConfig, MinhashDedupSignature
from datatrove.pipeline.filters import (
    C4QualityFilter,
    FineWebQualityFilter,
    GopherQualityFilter,
    GopherRepetitionFilter,
)


def main():
    path, stage = sys.argv[1], sys.argv[2]
    texts = [json.loads(line)["text"] for line in open(path, encoding="utf-8")]
    if stage == "minhash":
        sig = MinhashDedupSignature(output_folder="/tmp/kiln-unused-minhash", config=MinhashConfig())
        # datatrove 0.10.1 passes `str` to xxhash, which xxhash 4 refuses:
        # UTF-8 bytes, as older xxhash took them (tests/curation_minhash.rs).
        sig._hash_func = lambda t: xxhash.xxh64_intdigest(t.encode("utf-8"))
        sig.get_signature(sig.get_shingles("warm up the tokenizer and parameters once"))
        started = time.perf_counter()
        for t in texts:
            shingles = sig.get_shingles(t)
            if len(shingles):
                sig.get_signature(shingles)
    else:
        make = {
            "gopher_quality": GopherQualityFilter,
            "gopher_repetition": GopherRepetitionFilter,
            "c4": C4QualityFilter,
            "fineweb": FineWebQualityFilter,
        }[stage]
        f = make()
        f.filter(Document(text="warm up the word tokenizer once.", id="w"))
        started = time.perf_counter()
        for i, t in enumerate(texts):
            try:
                f.filter(Document(text=t, id=str(i)))
            except ZeroDivisionError:
                pass  # FineWeb on a document with no words (kiln takes inf)
    print(stage, len(texts), time.perf_counter() - started)


if __name__ == "__main__":
    main()
