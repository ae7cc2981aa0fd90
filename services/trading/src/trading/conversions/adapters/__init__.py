"""MongoDB stores of quotes and fundings, and the wallet command sender."""
