"""The reference policy: frozen copy, adapter-disabled base, precomputed log-probs, sync, sharding."""
