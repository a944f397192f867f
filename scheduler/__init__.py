"""toposched: scheduler package."""
