"""The memory-hierarchy engine: HBM traffic and tile schedules, recorded while the book's
reference algorithms run.

    from flashedu import iomodel
    r = iomodel.simulate("v2", N=4096, d=64, sram_bytes=228 * 1024)   # shape-only, fast
    f = iomodel.formula("v2", N=4096, d=64, block_r=r.block_r, block_c=r.block_c)
    assert r.read_elements == f.exact.reads

Pieces: ``hbm_sram`` (HBM, SRAM), ``chip`` (what references are written against), ``trace``
(events), ``blocks`` (block sizes, tile tests), ``report``, ``run`` (simulate), ``formulas``,
``models`` (the algorithms plugged in: each ``flashedu/ops/<algorithm>/`` registers its references;
this package imports nothing from ``ops``).
"""
from flashedu.iomodel.blocks import (DEFAULT_SRAM_BYTES, default_block_sizes, fa1_block_sizes, n_tiles,
                     sram_footprint)
from flashedu.iomodel.chip import Chip
from flashedu.iomodel.formulas import Counts, IOFormula, formula
from flashedu.iomodel.hbm_sram import HBM, SRAM, SRAMOverflowError
from flashedu.iomodel.report import Report, TensorTraffic
from flashedu.iomodel.models import Model, get_model, names, register_model
from flashedu.iomodel.run import simulate
from flashedu.iomodel.trace import Event, Trace

__all__ = ["Chip", "Counts", "DEFAULT_SRAM_BYTES", "Event", "HBM", "IOFormula",
           "Model", "Report", "SRAM", "SRAMOverflowError", "TensorTraffic", "Trace", "default_block_sizes",
           "fa1_block_sizes", "formula", "get_model", "n_tiles", "names", "register_model", "simulate",
           "sram_footprint"]
