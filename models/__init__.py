"""toposched: models package."""
