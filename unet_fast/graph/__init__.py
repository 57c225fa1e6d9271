"""Model capture, graph passes and the execution plan."""
