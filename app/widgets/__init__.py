"""Reusable pieces of the pages: components, charts, image helpers, attack controls, honesty labels."""
