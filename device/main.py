# Boot entry on a board: start the CAP agent. Ctrl-C (or a REPL frame) stops it, leaves every
# resource in its safe state, and drops back to the REPL for re-flashing (docs/protocol.md).
import gc

# One module at a time, the loader's leftovers collected after each: the next module's code
# fills those holes instead of leaving them between tables (a 64 KB heap has no room for the
# fragmentation; issue 12).
for _name in ("capshared.framing", "capshared.linkauth", "capagent.link", "board", "capagent.grants",
              "capagent.control", "capagent.agent"):
    __import__(_name)
    gc.collect()
import capagent.agent  # noqa: E402

capagent.agent.main()

# Back at the REPL: unload the agent so that mpremote has the heap for re-flashing without a
# soft reset (the agent's bytecode alone is most of a small board's heap).
import sys  # noqa: E402

for _name in list(sys.modules):
    if _name.startswith("capagent") or _name.startswith("capshared") or _name in ("board", "main"):
        del sys.modules[_name]
del capagent
gc.collect()
