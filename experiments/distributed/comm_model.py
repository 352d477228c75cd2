"""Communication time per optimizer step, a written model (no measurement):
ring collectives, each rank sending (and receiving) 2 (N-1)/N x bytes for an
all-reduce (= reduce-scatter + all-gather: DDP, ZeRO-1, ZeRO-2) and
3 (N-1)/N x bytes for ZeRO-3 (all-gather in forward and backward +
reduce-scatter), with 2 (N-1) (resp. 3 (N-1)) latency steps per bucket.

Kiln reduces and gathers f32, so bytes = 4 Psi. Links (per GPU, one
direction, nominal): NVLink 4 (H100 SXM) 450 GB/s inside a node of 8; NDR
InfiniBand 400 Gb/s = 50 GB/s, one NIC per GPU, when the ring leaves the node
(64 GPUs = 8 nodes: the ring's slowest hop sets its pace). Latency per hop:
3 us NVLink, 8 us InfiniBand. Buckets of 25 MiB.

  python3 experiments/distributed/comm_model.py
"""

MODELS = {"mobilellm-125m": 124_635_456, "mobilellm-350m": 345_355_200}  # `kiln config check`
LINKS = {"NVLink 450 GB/s": (450e9, 3e-6), "InfiniBand NDR 50 GB/s": (50e9, 8e-6)}
BUCKET = 25 * 2**20


def step_time(psi, n, bw, lat, factor):
    nbytes = 4 * psi
    buckets = -(-nbytes // BUCKET)
    return factor * (n - 1) / n * nbytes / bw + buckets * factor * (n - 1) * lat


print("| model | GPUs | link | DDP / ZeRO-1 / ZeRO-2 (ms) | ZeRO-3 (ms) |")
print("|---|---|---|---|---|")
for name, psi in MODELS.items():
    for n in (8, 64):
        for link, (bw, lat) in LINKS.items():
            if n == 64 and link.startswith("NVLink"):
                continue  # 64 GPUs span 8 nodes: InfiniBand bound
            two = step_time(psi, n, bw, lat, 2) * 1e3
            three = step_time(psi, n, bw, lat, 3) * 1e3
            print(f"| {name} ({psi / 1e6:.0f}M) | {n} | {link} | {two:.1f} | {three:.1f} |")
