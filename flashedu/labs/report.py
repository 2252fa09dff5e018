"""What a lab's grader hands back: one row per case and a diagnosis in words.

A :class:`Report` prints as a plain-text table (a terminal, a test, ``print``) and renders as an
HTML table in Jupyter and in the built book; both put the first failing case first, with the
diagnosis under the verdict, and the seed that replays the run.
"""
from __future__ import annotations

import html
from dataclasses import dataclass, field


@dataclass(frozen=True)
class CaseResult:
    """One graded case: what was run (``shape``, ``causal``, ``dtype``), how far the output was
    from the truth, the HBM traffic against the formula where the lab counts it, and why it
    failed (``diagnosis`` is empty when it passed)."""

    name: str
    shape: str
    causal: bool | None
    dtype: str
    max_error: float | None  # None: nothing comparable came back (an exception, a wrong shape)
    passed: bool
    diagnosis: str = ""
    traffic: str = ""  # e.g. "Q 2.00×, K 1.00×" (reads against the formula); "" where not counted


@dataclass(frozen=True)
class Report:
    """The verdict of ``flashedu.labs.grade``.

    ``status`` is "passed", "failed" or "not attempted" (the reader's blanks still raise
    NotImplementedError); ``passed`` is True only for "passed". ``cases`` are in the order they
    ran; ``rows()`` puts the failing ones first."""

    lab: str
    seed: int
    status: str
    cases: tuple[CaseResult, ...] = ()
    message: str = ""  # not attempted: the blank's message
    notes: tuple[str, ...] = field(default=())  # extra lines: timing on a GPU, say
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    @property
    def failures(self) -> tuple[CaseResult, ...]:
        return tuple(c for c in self.cases if not c.passed)

    @property
    def diagnosis(self) -> str:
        """The first failing case's diagnosis ("" when every case passed)."""
        return self.failures[0].diagnosis if self.failures else ""

    def rows(self) -> tuple[CaseResult, ...]:
        return self.failures + tuple(c for c in self.cases if c.passed)

    def headline(self) -> str:
        if self.status == "not attempted":
            return f"{self.lab}: not attempted yet ({self.message})"
        n = len(self.cases)
        if self.passed:
            verdict = f"✓ {self.lab}: all {n} cases pass"
        else:
            verdict = f"✗ {self.lab}: {len(self.failures)} of {n} cases fail"
        return f"{verdict} (seed={self.seed}, {self.seconds:.1f} s)"

    def _columns(self) -> list[str]:
        cols = ["case", "shape", "causal", "dtype", "max error"]
        if any(c.traffic for c in self.cases):
            cols.append("traffic (× formula)")
        return cols + ["verdict"]

    @staticmethod
    def _cells(c: CaseResult, traffic: bool) -> list[str]:
        err = "—" if c.max_error is None else f"{c.max_error:.1e}"
        causal = "—" if c.causal is None else ("yes" if c.causal else "no")
        cells = [c.name, c.shape, causal, c.dtype, err]
        if traffic:
            cells.append(c.traffic or "—")
        return cells + ["pass" if c.passed else "FAIL"]

    def __str__(self) -> str:
        lines = [self.headline()]
        if self.diagnosis:
            lines.append(f"Diagnosis ({self.failures[0].name}): {self.diagnosis}")
        lines += list(self.notes)
        if self.cases:
            cols = self._columns()
            traffic = "traffic (× formula)" in cols
            table = [cols] + [self._cells(c, traffic) for c in self.rows()]
            widths = [max(len(r[k]) for r in table) for k in range(len(cols))]
            for r in table:
                lines.append("  ".join(x.ljust(w) for x, w in zip(r, widths)).rstrip())
        if self.status == "failed":
            lines.append(f"Replay this run: grade({self.lab!r}, fn, seed={self.seed})")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return str(self)

    def _repr_pretty_(self, p, cycle):
        p.text(str(self))

    def _repr_html_(self) -> str:
        colour = {"passed": "#1a7f37", "failed": "#b3261e"}.get(self.status, "#666")
        parts = [f'<div class="fe-lab-report"><p style="color:{colour};font-weight:600;margin:0.2em 0">'
                 f"{html.escape(self.headline())}</p>"]
        if self.diagnosis:
            parts.append(f"<p style='margin:0.2em 0'><b>Diagnosis</b> ({html.escape(self.failures[0].name)}): "
                         f"{html.escape(self.diagnosis)}</p>")
        parts += [f"<p style='margin:0.2em 0'>{html.escape(n)}</p>" for n in self.notes]
        if self.cases:
            cols = self._columns()
            traffic = "traffic (× formula)" in cols
            head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
            body = []
            for c in self.rows():
                style = "" if c.passed else ' style="background:#fdecea"'
                cells = "".join(f"<td>{html.escape(x)}</td>" for x in self._cells(c, traffic))
                body.append(f"<tr{style} title='{html.escape(c.diagnosis)}'>{cells}</tr>")
            # Cells wrap at spaces, so the table fits the page's column instead of scrolling.
            parts.append(f'<table style="font-size:0.85em;max-width:100%"><thead><tr>{head}</tr></thead>'
                         f"<tbody>{''.join(body)}</tbody></table>")
        if self.status == "failed":
            parts.append(f"<p style='font-size:0.85em;color:#666'>Replay this run: "
                         f"<code>grade({html.escape(repr(self.lab))}, fn, seed={self.seed})</code></p>")
        return "".join(parts) + "</div>"
