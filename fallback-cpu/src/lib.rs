//! kiln's CPU path.
