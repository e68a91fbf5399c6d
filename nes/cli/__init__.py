"""`python -m nes`: one small parser and handler per command (the top layer)."""
