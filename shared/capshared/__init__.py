"""What host and device must agree on: framing, the message table, error codes, limits.

Every module here runs unchanged under CPython and the MicroPython unix port, and is tested
under both from one set of vectors (tests/shared/vectors.json). Keep it that way: no f-strings
with `=`, no dataclasses, no typing imports, nothing that allocates per frame on the device path.
"""
