"""Referrals: who invited whom, and the commission a referrer earns on an invitee's fees."""
