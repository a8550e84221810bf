"""The model: loading, PEFT adapters, unwrapping, the forward pass and chunked log-probs."""
