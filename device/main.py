# Boot entry on a board: start the CAP agent. Ctrl-C (or a REPL frame) stops it, leaves every
# resource in its safe state, and drops back to the REPL for re-flashing (docs/protocol.md).
import capagent.agent

capagent.agent.main()
