"""Log-probs -> loss -> metrics: the DPO-family losses and the logged metric sums."""
