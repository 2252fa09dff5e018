"""The labs: the reader writes FlashAttention, piece by piece, and a grader says what is wrong.

    from flashedu.labs import grade
    report = grade("online_softmax", my_softmax)   # shows as a table in Jupyter
    report.passed

Labs (each a page of the book's Labs part): ``online_softmax``, ``v1_reference``,
``v2_forward``, ``v2_backward``, ``block_sparse``, ``split_kv``. Each lab's module holds its
cases and its diagnoses; ``solutions/`` holds a passing answer per lab (the pages show them).
"""
from flashedu.labs.blanks import require_filled
from flashedu.labs.grade import LABS, grade
from flashedu.labs.report import CaseResult, Report

__all__ = ["CaseResult", "LABS", "Report", "grade", "require_filled"]
