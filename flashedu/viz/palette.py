"""Colours and sizes shared by every widget: Okabe–Ito, safe for the common colour-blindnesses."""
from __future__ import annotations

OKABE_ITO = {
    "black": "#000000", "orange": "#E69F00", "sky": "#56B4E9", "green": "#009E73",
    "yellow": "#F0E442", "blue": "#0072B2", "vermillion": "#D55E00", "purple": "#CC79A7",
    "grey": "#BBBBBB",
}
SEQUENCE = [OKABE_ITO[k] for k in ("blue", "orange", "green", "vermillion", "purple", "sky", "yellow", "black")]
ALGORITHM_COLORS = {"standard": OKABE_ITO["vermillion"], "v1": OKABE_ITO["orange"], "v2": OKABE_ITO["blue"]}
READ_COLOR, WRITE_COLOR = OKABE_ITO["sky"], OKABE_ITO["vermillion"]

# Tile states of the score-matrix grid, in code order (0, 1, 2, 3).
TILE_STATES = ("to do", "done", "skipped (masked)", "working now",
               "S/P tile written to HBM now", "S/P tile read from HBM now")
TILE_COLORS = ("#EEEEEE", OKABE_ITO["sky"], "#8C8C8C", OKABE_ITO["vermillion"],
               OKABE_ITO["green"], OKABE_ITO["purple"])
WRITTEN_NOW, READ_NOW = 4, 5  # the last two states: only schedules with N×N tensors in HBM
# Q / O / K / V tile strips: where each tile is.
STRIP_STATES = ("in HBM", "in SRAM", "written to HBM now", "O tile written to HBM earlier")
STRIP_COLORS = ("#EEEEEE", OKABE_ITO["orange"], OKABE_ITO["green"], "#A8D8C0")
WRITTEN_EARLIER = 3  # an O tile that has reached HBM (the number on it: how many times)

# Figures set no width: plotly then fills the book column, whatever the reader's screen.
FONT = dict(family="Helvetica, Arial, sans-serif", size=12)
# A legend under a figure in three fixed columns: a horizontal legend left to itself runs its
# last column past the right edge of the book's column, where plotly clips it.
LEGEND_BELOW = dict(orientation="h", x=0, y=-0.4, yanchor="top", font=dict(size=11),
                    entrywidth=0.33, entrywidthmode="fraction")


def discrete_colorscale(colors) -> list:
    """A heatmap colorscale that maps integer codes 0..n-1 (with zmin=-0.5, zmax=n-0.5) to colors."""
    n = len(colors)
    scale = []
    for k, c in enumerate(colors):
        scale += [[k / n, c], [(k + 1) / n, c]]
    return scale
