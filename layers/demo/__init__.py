"""The demo city: a fictional district in Shanghai, generated from a seed and loaded by COPY."""
