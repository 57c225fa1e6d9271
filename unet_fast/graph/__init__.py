"""Model capture, graph passes and the execution plan.

capture.py (torch.export -> OpGraph) -> passes/ (rewrite and mark) -> lower.py (Plan IR of ir.py) ->
planner.py (buffer lifetimes and arena offsets)."""
