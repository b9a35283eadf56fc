"""Pure tests: no sockets, no processes (codec, state, coordinator model)."""
