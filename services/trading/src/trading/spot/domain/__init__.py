"""The pure matching engine: markets in integer ticks and steps, the book, fills and fees. No I/O."""
