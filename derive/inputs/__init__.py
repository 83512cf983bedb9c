"""What the user gives, checked before anything is derived: numbers and depths, the named
choices, and the table of scalar parameters every command and the API read.
"""
