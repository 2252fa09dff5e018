"""Checkers for the chapters' exercises: each runs hidden random cases against the reader's
function and says what is wrong, or that every case passed. They return True/False (and print),
so a notebook can ``assert check_x(my_fn)``. One module per chapter; import them all here.
"""
from flashedu.exercises.ch01 import check_s_and_p_bytes
from flashedu.exercises.ch02 import check_merge, check_softmax
from flashedu.exercises.ch03 import check_fa1_blocks, check_v1_traffic
from flashedu.exercises.ch04 import check_programs, check_v2_traffic
from flashedu.exercises.ch05 import check_block_sparse_reads, check_csr, check_programs_per_sm
from flashedu.exercises.ch06 import (check_block_scales, check_descale_fold, check_exp_share, check_fwht,
                                     check_timeline_stats)
from flashedu.exercises.ch07 import check_merge_splits, check_overlap_threshold, check_zigzag
from flashedu.exercises.ch08 import check_attention_flops, check_naive_memory

__all__ = ["check_attention_flops", "check_block_scales", "check_block_sparse_reads", "check_csr", "check_descale_fold",
           "check_exp_share", "check_fa1_blocks", "check_fwht", "check_merge", "check_merge_splits",
           "check_naive_memory", "check_overlap_threshold", "check_programs", "check_programs_per_sm", "check_s_and_p_bytes",
           "check_softmax", "check_timeline_stats", "check_v1_traffic", "check_v2_traffic", "check_zigzag"]
