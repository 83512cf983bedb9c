"""Anki cards and the ``.apkg`` deck.
"""
