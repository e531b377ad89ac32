"""Tools that walk a network: gradient checks (and, in later modules, summaries)."""
