"""Programs onto SMs (seed 000: v1 parallelises over batch × heads, v2 over Q blocks too) and the
warp partition inside a program."""
import pytest

from flashedu.iomodel.parallel import occupancy, programs, warp_partition
from flashedu.viz.parallelism import sm_waves_figure, warp_partition_figure


def test_v1_leaves_sms_idle_with_few_heads_and_v2_fills_them():
    v1 = occupancy("v1", batch=1, heads=16, N=16384, gpu="A100")
    v2 = occupancy("v2", batch=1, heads=16, N=16384, gpu="A100", block_r=128)
    assert (v1.programs, v1.waves) == (16, 1)
    assert v1.utilization == pytest.approx(16 / 108)
    assert v2.programs == 16 * 128 and v2.waves == -(-2048 // 108)
    assert v2.utilization > 0.99


def test_programs_counts_partial_q_blocks_and_rejects_unknown():
    assert programs("v2", batch=2, heads=3, N=129, block_r=64) == 2 * 3 * 3
    with pytest.raises(ValueError, match="algorithm"):
        programs("v3", batch=1, heads=1, N=1)
    with pytest.raises(ValueError, match="per_sm"):
        occupancy("v1", batch=1, heads=1, N=1, per_sm=0)


def test_warp_partition_split_q_exchanges_nothing():
    k = warp_partition("split_k", block_r=64, block_c=64, d=64, warps=4)
    q = warp_partition("split_q", block_r=64, block_c=64, d=64, warps=4)
    assert q["smem_exchange_bytes"] == 0 and k["smem_exchange_bytes"] == 2 * 4 * 64 * 64 * 4
    assert {w for row in k["owner"] for w in row} == {0, 1, 2, 3}
    assert all(len(set(row)) == 1 for row in q["owner"])  # a row belongs to one warp
    assert all(len(set(row)) == 4 for row in k["owner"])  # a row is shared by all warps
    with pytest.raises(ValueError, match="scheme"):
        warp_partition("split_z", block_r=8, block_c=8, d=8)


def test_figures_have_one_frame_per_wave():
    fig = sm_waves_figure(batch=1, heads=16, N=8192, gpu="H100")
    assert len(fig.frames) == occupancy("v2", batch=1, heads=16, N=8192, gpu="H100").waves
    assert fig.frames[0].data[0].z.tolist() != fig.frames[-1].data[0].z.tolist()
    assert len(warp_partition_figure().data) >= 2
