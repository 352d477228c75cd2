#!/usr/bin/env python3
"""File size and llama.cpp CPU speed of one GGUF (llama-cpp-python, 2 threads):
prompt processing of 128 tokens and greedy decoding of 128 tokens, best of 3,
as one JSON line.

    llamacpp_speed.py FILE.gguf
"""

import json
import os
import sys
import time

import llama_cpp
import numpy as np

PROMPT = "Once upon a time, there was a little girl named Lily. She had a red ball."


def main():
    path = sys.argv[1]
    llm = llama_cpp.Llama(model_path=path, n_ctx=512, n_batch=512, verbose=False, n_threads=2)
    ids = llm.tokenize(PROMPT.encode(), add_bos=False, special=False)
    prompt = (ids * (128 // len(ids) + 1))[:128]
    pp, tg = [], []
    for _ in range(3):
        llm.reset()
        t0 = time.perf_counter()
        llm.eval(prompt)
        pp.append(len(prompt) / (time.perf_counter() - t0))
        llm.reset()
        llm.eval(ids)
        t0 = time.perf_counter()
        for _ in range(128):
            llm.eval([int(np.argmax(llm.scores[llm.n_tokens - 1]))])
        tg.append(128 / (time.perf_counter() - t0))
    print(json.dumps({"gguf": {"file": os.path.basename(path), "bytes": os.path.getsize(path),
                               "prompt_tokens_per_s": max(pp), "decode_tokens_per_s": max(tg),
                               "threads": 2}}))


if __name__ == "__main__":
    main()
