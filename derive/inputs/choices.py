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
