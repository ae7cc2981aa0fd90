"""Storage of the referrals feature, behind `referrals.application.ports`: MongoDB (`mongo`, what
the service runs on) and memory (`memory`); one contract suite runs against both."""
