//! results.csv read back: one reader for resume and `state import`.
