"""The P2P domain: pure rules (the trade state machine, offers, amounts); no I/O imports."""
