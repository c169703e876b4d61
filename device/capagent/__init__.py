# capagent: the CAP device agent (MicroPython). It owns the hardware: the host asks, it decides.
VERSION = "0.1.0"
