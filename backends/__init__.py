"""Targets, the cost model, the schedule format, the emitter, the simulator and report writers."""
