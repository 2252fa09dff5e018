"""Measurements on a GPU: every registered implementation beside torch's SDPA backends, with
provenance stored next to the numbers. Results live in ``flashedu/data/`` (package data, so Colab readers
have them too) and are never edited by hand.
"""
