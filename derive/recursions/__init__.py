"""Second moments through depth: a block's maps folded from its primitives, the forward,
backward and weight-gradient recursions, their closed forms and the written derivation.
"""
