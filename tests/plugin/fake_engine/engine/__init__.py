"""A stand-in for the ToPT engine that speaks its command line and event protocol (tests only)."""
