# Boot entry on a board: start the CAP agent. Ctrl-C (or a REPL frame) stops it, leaves every
# resource in its safe state, and drops back to the REPL for re-flashing (docs/protocol.md).
import capagent.agent

capagent.agent.main()

# Back at the REPL: unload the agent so that mpremote has the heap for re-flashing without a
# soft reset (the agent's bytecode alone is most of a small board's heap).
import gc  # noqa: E402
import sys  # noqa: E402

for _name in list(sys.modules):
    if _name.startswith("capagent") or _name.startswith("capshared") or _name in ("board", "main"):
        del sys.modules[_name]
del capagent
gc.collect()
