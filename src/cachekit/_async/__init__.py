"""The async cache: the source the sync one (``_sync``) is generated from."""
