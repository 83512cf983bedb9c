"""Finite networks in NumPy: the simulation behind ``derive check`` and the memory it needs.
"""
