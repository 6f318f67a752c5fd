"""Python helpers shared by pksm's scripts and tests (Debian's python3 only)."""
