//! Checking a commit out into a workspace (helper A fills this in).
