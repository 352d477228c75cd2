#!/usr/bin/env python3
"""Greedy continuation of a prompt in llama.cpp (llama-cpp-python), printed as
prompt + continuation, to compare with `kiln generate --temperature 0`.

    greedy_llamacpp.py FILE.gguf "PROMPT" [N]

The prompt is tokenised by llama.cpp from the file's embedded vocabulary
(no BOS); the KV cache is f32 as in check_gguf_llamacpp.py; N (32) tokens
are chosen by argmax, stopping at the end-of-text token.
"""

import sys

import llama_cpp
import numpy as np


def main():
    path, prompt = sys.argv[1], sys.argv[2]
    n_new = int(sys.argv[3]) if len(sys.argv) > 3 else 32
    llm = llama_cpp.Llama(model_path=path, n_ctx=256, n_batch=256, logits_all=True,
                          verbose=False, n_threads=2, type_k=0, type_v=0)
    ids = llm.tokenize(prompt.encode(), add_bos=False, special=False)
    llm.eval(ids)
    out = []
    for _ in range(n_new):
        nxt = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        if nxt == llm.token_eos():
            break
        out.append(nxt)
        llm.eval([nxt])
    sys.stdout.write(prompt + llm.detokenize(out).decode("utf-8", "replace") + "\n")


if __name__ == "__main__":
    main()
