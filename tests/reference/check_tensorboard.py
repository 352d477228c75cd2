#!/usr/bin/env python3
"""Dump the scalar series of a Kiln run's TensorBoard event files as JSON.

    /work/venv/bin/python tests/reference/check_tensorboard.py RUN_DIR

Loads ``RUN_DIR/tb`` (the event files directly inside it) with
``tensorboard.backend.event_processing.event_accumulator.EventAccumulator``
(size_guidance 0 for scalars and tensors, so nothing is down-sampled;
purge_orphaned_data=False, so every event written is reported even across restarts)
and prints ONE JSON object to stdout:

    {"tags": [sorted scalar tags],
     "scalars": {tag: [[step, value], ...]}}

Series are in file order (event files in name order, events in write order).
Values are float32 summaries widened to double; compare with metrics.jsonl using a
float32 tolerance. Non-finite values are written as the strings "NaN", "Infinity",
"-Infinity" (plain JSON has no NaN). Both encodings of a scalar are read:
legacy ``simple_value`` summaries and TF2-style tensor summaries whose plugin is
"scalars"; if one tag appears in both, the series are concatenated.

Exit status: 0 on success (a warning goes to stderr if there are event files but no
scalar tags); 2 if tensorboard is not importable, RUN_DIR/tb does not exist, or it holds
no event files (``*tfevents*``).
"""

import glob
import json
import math
import os
import sys


def fail(msg):
    print(f"check_tensorboard: {msg}", file=sys.stderr)
    sys.exit(2)


def clean(v):
    v = float(v)
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "Infinity" if v > 0 else "-Infinity"
    return v


def main(argv):
    if len(argv) != 2 or argv[1] in ("-h", "--help"):
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    run_dir = argv[1]
    tb_dir = os.path.join(run_dir, "tb")

    try:
        from tensorboard.backend.event_processing import event_accumulator as ea
    except Exception as e:  # noqa: BLE001 - ImportError or a broken install
        fail(f"tensorboard is not importable ({e!r}); install it (pip install tensorboard)")

    if not os.path.isdir(tb_dir):
        fail(f"{tb_dir} is not a directory")
    files = sorted(glob.glob(os.path.join(tb_dir, "*tfevents*")))
    if not files:
        nested = glob.glob(os.path.join(tb_dir, "**", "*tfevents*"), recursive=True)
        hint = f" (found {len(nested)} in subdirectories, which are not read)" if nested else ""
        fail(f"no event files (*tfevents*) directly in {tb_dir}{hint}")

    acc = ea.EventAccumulator(
        tb_dir,
        size_guidance={ea.SCALARS: 0, ea.TENSORS: 0},
        purge_orphaned_data=False,
    )
    acc.Reload()
    tags = acc.Tags()

    scalars = {}
    for tag in tags.get(ea.SCALARS, []):
        scalars[tag] = [[int(e.step), clean(e.value)] for e in acc.Scalars(tag)]

    # TF2-style scalars: tensor summaries with the "scalars" plugin
    tensor_tags = tags.get(ea.TENSORS, [])
    if tensor_tags:
        from tensorboard.util import tensor_util

        for tag in tensor_tags:
            meta = acc.SummaryMetadata(tag)
            if meta.plugin_data.plugin_name != "scalars":
                continue
            series = scalars.setdefault(tag, [])
            for e in acc.Tensors(tag):
                arr = tensor_util.make_ndarray(e.tensor_proto)
                series.append([int(e.step), clean(arr.reshape(-1)[0])])

    if not scalars:
        print(f"check_tensorboard: warning: {len(files)} event file(s) in {tb_dir} "
              f"but no scalar tags", file=sys.stderr)
    out = {"tags": sorted(scalars), "scalars": {t: scalars[t] for t in sorted(scalars)}}
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main(sys.argv)
