"""Pair -> tokens: chat renderers and the tokenization of preference rows."""
