"""Time decoding (one query token against a long K/V cache) on a GPU: split-KV vs SDPA vs v2.

On the GPU machine, from the repository root (about 2 minutes on an H200):

    python -m flashedu.bench.decode --out $OUT

Shapes: fp16, D = 128, 64 query heads sharing 8 K/V heads (GQA 8:1), query length 1,
B in {1, 4, 16}, cached keys N_k in {4k, 8k, 16k, 32k, 64k, 128k}. Implementations:

* ``split_kv_triton`` (chapter 7, GQA native) with its heuristic split count, and with one split
  (the same kernel without splitting: what the splits buy), and with the merge forced into the
  split launch (``split_kv_triton_1launch``) or into a second kernel (``_2launch``): the
  default takes one launch for eager calls on short caches, two in a CUDA graph;
* ``sdpa_gqa``: torch SDPA with ``enable_gqa=True``, default backend choice;
* ``sdpa_flash`` and ``v2_triton`` (chapter 4) on K/V expanded to 64 heads beforehand (the
  expansion is not timed; skipped where the expanded cache would not fit comfortably).

Each is checked against fp32 SDPA first, then timed with the median of triton.testing.do_bench.
Decoding is memory-bound: the table gives GB/s of K/V cache read (the compact cache, 8 heads),
against the HBM bandwidth. Writes OUT/decode/<gpu>.json after every row (copy it to flashedu/recorded/data/decode/) with
flashedu.provenance.collect().
"""
from __future__ import annotations

import argparse
import json
import time


import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import triton  # noqa: E402
from flashedu.bench.recorder import Recorder, gpu_time, require_gpu  # noqa: E402

from flashedu.bench.peers import sdpa_peer  # noqa: E402
from flashedu.ops.split_kv.kernel import _sm_count, split_kv_attention_triton  # noqa: E402
from flashedu.ops.split_kv.plan import num_splits_heuristic  # noqa: E402
from flashedu.ops.v2.kernel import flash_attention_v2  # noqa: E402

H, H_KV, D, DT = 64, 8, 128, torch.float16
EXPAND_LIMIT_BYTES = 24 * 2**30  # the expanded K/V (8x the cache) above this is skipped


def impls(q, k, v, expanded, split_counts=(), block_ns=()):
    out = {
        "split_kv_triton": lambda: split_kv_attention_triton(q, k, v),
        "split_kv_triton_1split": lambda: split_kv_attention_triton(q, k, v, num_splits=1),
        # the merge in the split launch, and as a second kernel: the default picks per call
        "split_kv_triton_1launch": lambda: split_kv_attention_triton(q, k, v, one_launch=True),
        "split_kv_triton_2launch": lambda: split_kv_attention_triton(q, k, v, one_launch=False),
        "sdpa_gqa": lambda: F.scaled_dot_product_attention(q, k, v, enable_gqa=True),
    }
    for s in split_counts:  # --splits: the split count's ablation
        out[f"split_kv_triton S={s}"] = lambda s=s: split_kv_attention_triton(q, k, v, num_splits=s)
    for n in block_ns:  # --block-n: the key tile's
        out[f"split_kv_triton n={n}"] = lambda n=n: split_kv_attention_triton(q, k, v, block_n=n)
    if expanded is not None:
        ke, ve = expanded
        flash = sdpa_peer("sdpa_flash")
        out["sdpa_flash"] = lambda: flash(q, ke, ve)
        out["v2_triton"] = lambda: flash_attention_v2(q, ke, ve)
    return out


def run(Bs, Nks, log, rows, split_counts=(), block_ns=()):
    for B in Bs:
        for N_k in Nks:
            torch.manual_seed(0)
            q = torch.randn(B, H, 1, D, device="cuda", dtype=DT)
            k, v = (torch.randn(B, H_KV, N_k, D, device="cuda", dtype=DT) for _ in range(2))
            cache_bytes = 2 * k.numel() * k.element_size()
            expanded = None
            if cache_bytes * H // H_KV <= EXPAND_LIMIT_BYTES:
                expanded = tuple(t.repeat_interleave(H // H_KV, dim=1) for t in (k, v))
            ref = F.scaled_dot_product_attention(q.float(), k.float().repeat_interleave(H // H_KV, 1),
                                                 v.float().repeat_interleave(H // H_KV, 1)) \
                if cache_bytes <= 2**28 else None  # the fp32, expanded copy: 16x the cache
            splits = num_splits_heuristic(B * H_KV, triton.cdiv(N_k, 128), _sm_count(0))
            for name, fn in impls(q, k, v, expanded, split_counts, block_ns).items():
                r = dict(impl=name, B=B, N_k=N_k, H=H, H_kv=H_KV, D=D, cache_bytes=cache_bytes)
                if name == "split_kv_triton":
                    r["num_splits"] = splits
                try:
                    with torch.no_grad():
                        o = fn()
                        if ref is not None:
                            r["max_err"] = (o.float() - ref).abs().max().item()
                        r["ms"] = triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median")
                        r["graph_ms"] = gpu_time(fn)["ms"]  # the GPU's time alone, no host
                    r["cache_GBps"] = round(cache_bytes / (r["ms"] * 1e-3) / 1e9, 1)
                except Exception as e:  # noqa: BLE001  (a backend that refuses a shape is data)
                    r["error"] = f"{type(e).__name__}: {str(e)[:200]}"
                rows.append(r)
                log(r)
            if expanded is None:
                rows.append(dict(impl="sdpa_flash", B=B, N_k=N_k, skipped="expanded K/V too large"))
                log(rows[-1])
            del q, k, v, expanded, ref
            torch.cuda.empty_cache()
    return rows


def table(rows, Bs, Nks):
    names = ["split_kv_triton", "split_kv_triton_1split", "sdpa_gqa", "sdpa_flash", "v2_triton"]
    lines = ["\nK/V cache read, GB/s (ms)   " + "".join(f"{n:>22}" for n in Nks)]
    for B in Bs:
        for name in names:
            cells = []
            for N_k in Nks:
                r = next((r for r in rows if r["impl"] == name and r["B"] == B and r["N_k"] == N_k), {})
                cells.append(f"{r['cache_GBps']:>10.0f} ({r['ms']:7.3f})" if "ms" in r else f"{'-':>22}")
            lines.append(f"B={B:<3d}{name:24s}" + "".join(f"{c:>22}" for c in cells))
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(prog=f"python -m {__spec__.name}" if __spec__ else None,
                                 description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=".")
    ap.add_argument("--quick", action="store_true", help="B=1 and N_k=4k, 64k only")
    ap.add_argument("--B", type=int, nargs="+", help="these batch sizes only")
    ap.add_argument("--N_k", type=int, nargs="+", help="these cache lengths only")
    ap.add_argument("--splits", type=int, nargs="+", default=(),
                    help="also time split_kv_triton with each of these split counts")
    ap.add_argument("--block-n", type=int, nargs="+", default=(),
                    help="also time split_kv_triton with each of these key tiles (dividing 128)")
    args = ap.parse_args()
    require_gpu("flashedu.bench.decode")
    Bs, Nks = ((1,), (4096, 65536)) if args.quick else ((1, 4, 16), (4096, 8192, 16384, 32768, 65536, 131072))
    Bs, Nks = tuple(args.B or Bs), tuple(args.N_k or Nks)
    t0 = time.time()
    rows = []
    rec = Recorder(args.out, "decode", shapes=dict(H=H, H_kv=H_KV, D=D, dtype="float16", N_q=1))

    def log(r):
        print(json.dumps(r), flush=True)
        rec.save(rows)

    run(Bs, Nks, log, rows, args.splits, args.block_n)
    print(table(rows, Bs, Nks))
    path = rec.save(rows, final=True, seconds=round(time.time() - t0, 1))
    print(f"\nwrote {path} in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
