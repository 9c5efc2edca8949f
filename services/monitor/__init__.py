"""Deviation detection in the live twin: per measured entity, the residual measured -
modelled, normalised by its noise, tested by a two-sided CUSUM; a departure is raised as
an event with its size and likely cause, and cleared when the residual returns.

    cusum.py      the detector, its hysteresis and its average run length
    noise.py      a residual's noise when none is configured (robust estimate)
    cause.py      the cause rule: sensor, equipment or load
    residuals.py  readings paired with the model's values; events raised and cleared
    service.py    the same on the bus, in the twin process
"""
