"""Tokens -> model inputs: batch layouts (padded, packed, prefix-shared), their masks, the collator."""
