"""The plant emulator (``twin plant``): a "true" site, the model with parameters the twin
does not know, served through the protocols a real AI factory speaks (BMS over MQTT, a
DCGM exporter, Redfish, Modbus TCP), for tests, demos and calibration.

    truthfile.py   the truth file (YAML): site overrides, sensor errors, faults
    truth.py       the perturbed site and its step loop -> true signal values
    sensors.py     bias, drift, noise and dropouts (seeded) -> measured values
    bms.py dcgm.py redfish.py modbus.py    one protocol server (or client) each
    pointmap.py    the point map the gateway needs for this plant
    run.py         all of it together, paced at --speed x real time
"""
