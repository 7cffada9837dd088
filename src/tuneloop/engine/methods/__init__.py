"""Training methods: each supplies its batch building and its loss; engine/loop.py does the rest."""
