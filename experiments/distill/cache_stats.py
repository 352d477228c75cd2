#!/usr/bin/env python3
"""What the cache holds, from the first shard of each domain: distinct sampled ids per
position and the teacher mass in the top-16.  $PY experiments/distill/cache_stats.py
(needs numpy; the record layout of trainer/src/distill_cache.rs with u16 ids, top-k 16,
16 samples)."""
import os
import struct

import numpy as np

here = os.path.dirname(os.path.abspath(__file__))
for dom in ('shakespeare','stories'):
    b=open(f'{here}/runs/cache/{dom}/cache-00000.bin', 'rb').read()
    n=struct.unpack_from('<Q',b,32)[0]
    off=48+8*n
    rec=224
    recs=np.frombuffer(b[off:off+n*256*rec],dtype=np.uint8).reshape(-1,rec)
    samp=recs[:,96:].reshape(-1,16,8)
    counts=samp[:,:,6].astype(np.uint16)|(samp[:,:,7].astype(np.uint16)<<8)
    distinct=(counts>0).sum(1)
    top=recs[:,:96].reshape(-1,16,6)
    lp=np.frombuffer(top[:,:,2:6].copy().tobytes(),dtype='<f4').reshape(-1,16)
    mass=np.exp(lp).sum(1)
    print(dom, n, 'windows; distinct sampled ids per position', distinct.mean().round(2), '; teacher mass in the top 16', mass.mean().round(3))
