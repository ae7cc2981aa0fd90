"""Storage of the savings feature."""
