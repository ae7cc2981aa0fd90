"""Storage of the referrals feature."""
