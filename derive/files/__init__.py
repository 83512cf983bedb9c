"""Files on disk: atomic writes and the manifest, the output folder's checks, and the journal
that makes an interrupted run recoverable.
"""
