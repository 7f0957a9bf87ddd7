//! The git host API client (helper B fills this in).
