"""Migration scripts of the store schema, oldest first."""
