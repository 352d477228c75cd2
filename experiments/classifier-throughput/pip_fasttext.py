"""pip fastText 0.9.2 on one thread, same arguments: train and predict docs/s.
Usage: python pip_fasttext.py DIR DIM WORD_NGRAMS BUCKET EPOCH LR"""

import sys
import time

import fasttext

d, dim, ngrams, bucket, epoch, lr = sys.argv[1:7]
t = time.perf_counter()
model = fasttext.train_supervised(
    input=f"{d}/train.txt", dim=int(dim), wordNgrams=int(ngrams), bucket=int(bucket),
    epoch=int(epoch), lr=float(lr), thread=1, seed=1, verbose=0,
)
train_s = time.perf_counter() - t
lines = open(f"{d}/test.txt", encoding="utf-8").read().splitlines()
t = time.perf_counter()
model.f.multilinePredict([line + "\n" for line in lines], 1, 0.0, "strict")
predict_s = time.perf_counter() - t
n_train = sum(1 for _ in open(f"{d}/train.txt", encoding="utf-8"))
print(f"pip fasttext train: {n_train} docs x {epoch} epochs in {train_s:.2f}s = "
      f"{n_train * int(epoch) / train_s:,.0f} doc-epochs/s")
print(f"pip fasttext predict: {len(lines)} docs in {predict_s:.2f}s = {len(lines) / predict_s:,.0f} docs/s")
