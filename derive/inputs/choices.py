"""The named choices of a residual stack, in a module light enough for ``--help``.

>>> INITS
('xavier', 'he', 'lecun')
"""

INITS = ("xavier", "he", "lecun")
ACTIVATIONS = ("linear", "relu", "leaky_relu", "tanh", "gelu", "erf")
#: The activations the study notes and the default ``derive check`` grid cover.
GRID_ACTIVATIONS = ("linear", "relu", "leaky_relu", "tanh", "gelu")
NORMS = ("none", "pre", "post")
BRANCHES = ("single", "mlp")
#: How softmax self-attention starts (``--attention``): logits q.k/sqrt(d_head) of independent
#: queries and keys, queries and keys at zero (P = 1/n), or tied queries and keys with 1/d
#: scaling (neural-tangents' infinite-width attention).
ATTENTION_MODES = ("standard", "uniform", "tied")
