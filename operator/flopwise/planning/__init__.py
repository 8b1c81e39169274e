"""Pure planning functions: budgets, compute-optimal sizes, model shapes, the campaign plan."""
