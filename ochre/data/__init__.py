"""Recordings in, aligned clip shards out, and the loaders that read them back."""
