"""toposched: simulations package."""
