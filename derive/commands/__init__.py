"""One module a command; each a thin layer over the API in :mod:`derive`."""
