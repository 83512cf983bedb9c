"""Gaussian expectations of the activations: second moments, means, the GELU derivation,
and expectations written as the notes print them; the softmax overlaps of self-attention
(softmax.py).
"""
