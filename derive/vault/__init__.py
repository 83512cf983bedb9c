"""Obsidian notes as editors leave them: derive's regions, the cards of a note, renamed notes.
"""
