//! The executor (placeholder while it is written).
