//! Branch and tag globs of a pipeline's top-level `on:` (helper B fills this in).
