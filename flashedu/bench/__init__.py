"""Measurements on a GPU: every registered implementation beside torch's SDPA backends, with
provenance stored next to the numbers. Results live in ``book/data/`` and are never edited by hand.
"""
