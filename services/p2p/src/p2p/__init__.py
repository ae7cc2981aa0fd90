"""The P2P escrow service: offers, trades and escrow through the wallet's holds."""
