"""The study notes: their sections, cards and figures, derived on two cores, kept in a
cache, rendered and written into the output folder.
"""
