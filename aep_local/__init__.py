"""The local stack: PostgreSQL, an S3-compatible store and the AEP emulator on this machine.

``bin/stack up|status|down|env`` (``python -m aep_local``) starts, checks and stops them.
"""
