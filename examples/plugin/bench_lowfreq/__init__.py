"""bench-lowfreq: an example bench plugin (its configs/ folder joins bench's config tree)."""
