"""The ToPT Processing algorithms, one per file."""
