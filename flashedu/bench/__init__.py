"""Measurements on a GPU: every registered implementation beside torch's SDPA backends, with
provenance stored next to the numbers. Results live in ``flashedu/recorded/data/`` (package data, so Colab readers
have them too) and are never edited by hand.

    import flashedu.bench
    result = flashedu.bench.run("quick")          # on a CUDA GPU; python -m flashedu.bench does the same
    print(flashedu.bench.table(result))
"""
from flashedu.bench.ablations import ABLATIONS
from flashedu.bench.flops import attention_flops
from flashedu.bench.report import table
from flashedu.bench.runner import collect, refusal, run
from flashedu.bench.schema import merge, validate

__all__ = ["ABLATIONS", "attention_flops", "collect", "merge", "refusal", "run", "table", "validate"]
