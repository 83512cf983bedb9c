"""Derivations rendered as text, LaTeX and Markdown through jinja2 templates, and the figures.
"""
