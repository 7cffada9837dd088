"""tuneloop: turn a general pre-trained language model into a specialised one, with people in the loop."""

__version__ = "0.1.0"
