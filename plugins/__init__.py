"""toposched: plugins package."""
