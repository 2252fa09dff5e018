"""Reader of ``flashedu.bench.decode``'s runs (kind ``"decode"``): decoding one token against a
long K/V cache, split-KV beside one split and torch SDPA, as the numbers chapter 7 quotes.
The figure is :func:`flashedu.viz.decode.measured_decode_figure`."""
from __future__ import annotations

from flashedu.hardware import gpu as get_gpu
from flashedu.ops.split_kv.plan import FLASH_ATTN_WAVE_FILL, num_splits_heuristic


def hbm_GBps(gpu_name) -> float | None:
    """The datasheet HBM bandwidth (GB/s) of the preset whose name ends the recorded GPU's name
    ("NVIDIA H200" -> H200), or None."""
    try:
        return get_gpu(str(gpu_name).split()[-1]).hbm_bandwidth / 1e9
    except (ValueError, IndexError):
        return None


def gpu_ms(row: dict) -> float:
    """The GPU's time of one call: the CUDA-graph replay where recorded (no host in it), else
    the eager median (runs before graph times were recorded)."""
    return row.get("graph_ms", row["ms"])


def gpu_GBps(row: dict) -> float:
    """GB/s of K/V cache read in :func:`gpu_ms`."""
    return row["cache_bytes"] / (gpu_ms(row) * 1e-3) / 1e9 if "graph_ms" in row else row["cache_GBps"]


def _decode_row(rows, impl, B, N_k):
    return next(r for r in rows if r["impl"] == impl and r["B"] == B and r["N_k"] == N_k and "ms" in r)


def summary(result: dict) -> dict:
    """The numbers chapter 7 quotes from ``flashedu/bench/decode.py``'s recorded file: the K/V
    head count; at the longest cache, batch 1 (the smallest batch) and the largest batch: split-KV
    with its heuristic against one split, against torch SDPA (``enable_gqa``), and each as a
    fraction of the GPU's datasheet HBM bandwidth, and (where the run names its SM count) the
    programs of that split count against those of flash-attn's rule (key tiles of 128, as
    bench/decode.py counts them); and at the shortest cache, batch 1, the GPU times of split-KV
    with and without splits, and split-KV's eager time. Times and GB/s are the
    GPU's own (:func:`gpu_ms`) wherever the run recorded graph replays."""
    rows = [r for r in result["rows"] if "ms" in r]
    info = result["provenance"]
    Bs, Nks = sorted({r["B"] for r in rows}), sorted({r["N_k"] for r in rows})
    b, B, n, n0 = Bs[0], Bs[-1], Nks[-1], Nks[0]
    hbm = hbm_GBps(info.get("gpu"))
    out = dict(gpu=info.get("gpu"), date=str(info.get("date", ""))[:10], hbm_GBps=hbm, N_k=n, B_small=b, B_big=B,
               small_N_k=n0, H_kv=rows[0]["H_kv"], sms=info.get("sms"))
    for tag, batch in (("", b), ("big_", B)):
        split, one, sdpa = (_decode_row(rows, i, batch, n) for i in ("split_kv_triton", "split_kv_triton_1split",
                                                                      "sdpa_gqa"))
        out.update({f"{tag}splits": split["num_splits"], f"{tag}split_GBps": gpu_GBps(split),
                    f"{tag}one_split_GBps": gpu_GBps(one), f"{tag}sdpa_GBps": gpu_GBps(sdpa),
                    f"{tag}split_speedup": gpu_ms(one) / gpu_ms(split),
                    f"{tag}sdpa_over_split": gpu_ms(split) / gpu_ms(sdpa)})
        if hbm:
            out[f"{tag}split_hbm"] = gpu_GBps(split) / hbm
            out[f"{tag}sdpa_hbm"] = gpu_GBps(sdpa) / hbm
    v2 = [r for r in rows if r["impl"] == "v2_triton" and r["B"] == b and r["N_k"] == n]
    out["v2_GBps"] = gpu_GBps(v2[0]) if v2 else None
    # At the shortest cache a call is host-bound: the GPU's own time (replayed from a CUDA graph,
    # where recorded) says what splitting does; the eager time says what a caller waits.
    split, one = (_decode_row(rows, i, b, n0) for i in ("split_kv_triton", "split_kv_triton_1split"))
    out["small_split_ms"] = split.get("graph_ms", split["ms"])
    out["small_one_split_ms"] = one.get("graph_ms", one["ms"])
    out["small_split_eager_ms"] = split["ms"]
    out["max_err"] = max(r["max_err"] for r in rows if "max_err" in r)
    if out["sms"]:  # the split count flash-attn's rule would pick here, and the programs of each
        out["programs"] = out["splits"] * b * out["H_kv"]
        out["fa_splits"] = num_splits_heuristic(b * out["H_kv"], -(-n // 128), out["sms"],
                                                wave_fill=FLASH_ATTN_WAVE_FILL)
        out["fa_programs"] = out["fa_splits"] * b * out["H_kv"]
    return out

