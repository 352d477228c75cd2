#!/usr/bin/env python3
"""check_gguf_llamacpp.py output (stdin) -> one JSON object (stdout)."""
import json, re, sys

s = sys.stdin.read()
r = {}
m = re.search(r"next-token NLL: kiln ([\d.]+) \(ppl ([\d.]+)\), llama.cpp ([\d.]+) \(ppl ([\d.]+)\); "
              r"mean KL\(kiln \|\| llama.cpp\) ([-\d.e+naninf]+) over (\d+) positions", s)
if m:
    r.update(kiln_nll=float(m[1]), kiln_ppl=float(m[2]), llamacpp_nll=float(m[3]),
             llamacpp_ppl=float(m[4]), kl=float(m[5]), positions=int(m[6]))
m = re.search(r"overall: max abs diff ([-\d.e+naninf]+), argmax agreement (\d+)/(\d+)", s)
if m:
    r.update(max_abs_diff=float(m[1]), argmax_agree=int(m[2]), argmax_n=int(m[3]))
m = re.search(r"max \|kiln logit\| ([\d.e+-]+)", s)
if m:
    r["max_abs_kiln_logit"] = float(m[1])
m = re.search(r"llama-cpp-python ([^)\s]+)", s)
if m:
    r["llama_cpp_python"] = m[1]
r["ok"] = s.rstrip().endswith("OK")
types = sorted(set(re.findall(r"^  \S+\s+(F32|F16|Q8_0|Q4_0|Q4_1|Q6_K)\s+ne=", s, re.M)))
r["ggml_types"] = types
print(json.dumps(r))
