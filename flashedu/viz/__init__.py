"""Widgets that run in static HTML (plotly frames and precomputed slider steps, no kernel).

* :func:`tile_schedule` - one algorithm's tile schedule from a simulation's event trace;
* :func:`side_by_side` - two schedules on one timeline;
* :func:`traffic_explorer` - HBM bytes and roofline time vs N, sliders for d and SRAM size.
"""
from flashedu.viz.schedule import event_times, schedule_states, side_by_side, tile_schedule
from flashedu.viz.traffic import traffic_curves, traffic_explorer

__all__ = ["event_times", "schedule_states", "side_by_side", "tile_schedule", "traffic_curves",
           "traffic_explorer"]
